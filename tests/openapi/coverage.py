"""Prints, per documented operation, the status classes keygate answered during
the schemathesis run (from the server's request log): which operations got past
authentication and validation (a 2xx) and which never did.

Usage: coverage.py SERVER_LOG OPENAPI_URL
"""

import collections
import json
import re
import sys
import urllib.request

doc = json.load(urllib.request.urlopen(sys.argv[2]))
ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
patterns = [
    (op, re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(op[1])) + r"\Z"))
    for op in ops
]

seen = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r'method=(\S+) path="?([^" ]+)"? status=(\d+)', line)
    if not m:
        continue
    for op, pattern in patterns:
        if op[0] == m[1] and pattern.match(m[2]):
            seen[op][m[3][0] + "xx"] += 1
            break

for op in sorted(ops, key=lambda o: (o[1], o[0])):
    counts = " ".join(f"{k}:{v}" for k, v in sorted(seen[op].items()))
    print(f"  {op[0]:6} {op[1]:42} {counts or 'none'}")
print(f"  {sum('2xx' in seen[op] for op in ops)} of {len(ops)} operations answered a 2xx")
