#!/usr/bin/env bash
# A real Prometheus scrapes a real keygate during a short sign-in load, and a PromQL
# query through Prometheus's HTTP API must return the number of sign-ins the load
# generator counted. Everything on 127.0.0.1; every wait is bounded.
#
#   KEYGATE_BIN=target/debug/keygate bash tests/ops/prometheus.sh
#
# Needs Debian's prometheus package (/usr/bin/prometheus), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="${KEYGATE_BIN:-target/debug/keygate}"
prometheus="${PROMETHEUS_BIN:-/usr/bin/prometheus}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAILED: $*" >&2
  for f in "$work"/*.log; do echo "--- $f (last lines)" >&2; tail -20 "$f" >&2; done
  exit 1
}

# Waits (at most $2 s) until the command $1 succeeds.
wait_for() {
  local what="$1" limit="$2" i=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le $((limit * 5)) ] || fail "waited ${limit} s for $what"
    sleep 0.2
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# keygate, with its admin listener on a port the OS picks; the log names both.
RUST_LOG=info NO_COLOR=1 "$bin" serve --listen 127.0.0.1:0 --database "sqlite://$work/kg.db" \
  --admin-listen 127.0.0.1:0 --rate-per-ip 0 --rate-per-identity 0 >"$work/keygate.log" 2>&1 &
pids+=($!)
keygate_pid=$!
listening() { grep -q "listening on http://" "$work/keygate.log" && grep -q "admin listener" "$work/keygate.log"; }
wait_for "keygate to listen" 30 listening
public=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$work/keygate.log" | head -1)
admin=$(sed -n 's/.*admin listener.*addr=\([0-9.:]*\).*/\1/p' "$work/keygate.log" | head -1)
[ -n "$public" ] && [ -n "$admin" ] || fail "no addresses in the log"
curl -fsS "http://$admin/readyz" | grep -q '"ok"' || fail "/readyz on the admin listener"

# Prometheus, scraping the admin listener every second.
prom_port=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: keygate
    static_configs:
      - targets: ["$admin"]
EOF
"$prometheus" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prom_port"
wait_for "Prometheus to be ready" 60 curl -fsS "$prom/-/ready"
target_up() {
  curl -fsS "$prom/api/v1/query" --data-urlencode 'query=up{job="keygate"}' | grep -q '"1"\]'
}
wait_for "Prometheus to scrape keygate" 60 target_up

# The load: full WebSocket sign-ins for 3 s; `completed` counts every sign-in that
# got a token (warm-up included), which is what the server counts.
"$bin" bench load --url "$public" --clients 4 --duration 3 --warmup 0.5 --floor-budget 0 --json \
  --server-pid "$keygate_pid" >"$work/bench.json" 2>"$work/bench.log" || fail "the load generator"
# --json ends the report with one JSON line.
expected=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(r["completed"])' "$work/bench.json")
[ "$expected" -gt 0 ] || fail "the load made no sign-in"
echo "load generator: $expected sign-ins"

# The next scrapes bring the final count; PromQL must agree with the load generator.
query='sum(keygate_signins_total{flow="provider_ws",outcome="ok"})'
got=""
for _ in $(seq 1 100); do
  got=$(curl -fsS "$prom/api/v1/query" --data-urlencode "query=$query" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")')
  [ "$got" = "$expected" ] && break
  sleep 0.2
done
[ "$got" = "$expected" ] || fail "Prometheus says $query = '$got', the load generator counted $expected"
echo "ok: Prometheus scraped keygate; $query = $got, as the load generator counted"

# Health during a drain: SIGTERM with nothing in flight ends the process cleanly.
kill -TERM "$keygate_pid"
for _ in $(seq 1 100); do kill -0 "$keygate_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$keygate_pid" 2>/dev/null && fail "keygate did not stop on SIGTERM"
echo "prometheus scrape test: ok"
