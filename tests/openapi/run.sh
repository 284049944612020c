#!/usr/bin/env bash
# Runs schemathesis (requirements.txt, in tests/openapi/.venv) against a live
# `keygate serve` on 127.0.0.1 with a fresh database: every operation of
# /openapi.json, a bounded number of examples each, checking that no answer is a
# 5xx and that every answer (status, content type, body) is what the document
# says. docs/openapi.md explains it.
#
#   KEYGATE_BIN      the keygate binary (default: target/debug/keygate)
#   MAX_EXAMPLES     examples per operation (default 20)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${KEYGATE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/keygate}
py="$here/.venv/bin/python"
st="$here/.venv/bin/schemathesis"
max_examples=${MAX_EXAMPLES:-20}

tmp=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

db="sqlite://$tmp/keygate.db"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

# An app's API key (a development key: it can mint a user's token directly).
keys=$("$bin" keys create --name schemathesis --broker --dev --database "$db" 2>/dev/null)
api_key=$(sed -n 's/^USER_API_KEY=//p' <<<"$keys")
api_secret=$(sed -n 's/^USER_API_SECRET=//p' <<<"$keys")

# The rate limits off: schemathesis sends hundreds of requests from one address.
NO_COLOR=1 RUST_LOG=info,keygate_server::server=debug "$bin" serve --dev --listen "127.0.0.1:$port" --database "$db" --web-root "$tmp" \
  --rate-per-ip 0 --rate-per-identity 0 >"$tmp/server.log" 2>&1 &
server=$!
up() { "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$base/openapi.json" 2>/dev/null; }
for _ in $(seq 1 300); do
  up && break
  kill -0 "$server" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
  sleep 0.1
done
up || { echo "keygate did not start" >&2; cat "$tmp/server.log"; exit 1; }

# The API-key signature headers, good for 50 minutes (docs/protocol.md).
read -r sig_msg sig < <("$py" - "$api_secret" <<'EOF'
import base64, datetime, hashlib, hmac, sys
secret = base64.b32decode(sys.argv[1][1:].upper() + "=" * (-len(sys.argv[1][1:]) % 8))
exp = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=50)).replace(microsecond=0)
msg = exp.strftime("%Y-%m-%dT%H:%M:%SZ")
mac = hmac.new(secret, msg.encode(), hashlib.sha256).digest()
print(msg, "b" + base64.b32encode(mac).decode().lower().rstrip("="))
EOF
)
# A user's access token, signed in through the Provider as a user would.
"$bin" id new --key "$tmp/user.pem" >/dev/null
token=$("$bin" login --key "$tmp/user.pem" --url "ws://127.0.0.1:$port/ws/userauth")
headers=(-H "x-keygate-api-key: $api_key" -H "x-keygate-api-sig-msg: $sig_msg"
  -H "x-keygate-api-sig: $sig" -H "Authorization: Bearer $token" -H "Origin: $base")

common=(--checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,unsupported_method,ignored_auth,negative_data_rejection
  --max-examples "$max_examples" --seed 19 --generation-database none --no-color
  --request-timeout 10 --suppress-health-check all --workers 2)

# Every operation but the two that end the caller's session, which would turn the
# rest of the run into 401s.
cd "$tmp"  # schemathesis leaves its files in the working directory
start=$(date +%s)
"$st" run "$base/openapi.json" "${common[@]}" "${headers[@]}" \
  --exclude-path /v1/logout --exclude-path-regex '^/v1/sessions/'
# Then those two, last.
"$st" run "$base/openapi.json" "${common[@]}" "${headers[@]}" \
  --include-path /v1/logout --include-path-regex '^/v1/sessions/'
echo "schemathesis: $(( $(date +%s) - start )) s"
"$py" "$here/coverage.py" "$tmp/server.log" "$base/openapi.json"
