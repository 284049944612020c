#!/usr/bin/env bash
# The cost of the operations surface and of key-bound tokens, each measured against
# its absence in one run, on 127.0.0.1 (BENCHMARKS.md, "Metrics" and "Key-bound
# tokens (DPoP)"):
#
#   scripts/bench-ops.sh            # results in $OUT (default /tmp/keygate-bench/ops)
#
# 1. Sign-ins with and without a scraper: `keygate serve --admin-listen`, WebSocket
#    sign-ins (64 clients, $SECS s), alternating a phase without scraping and one
#    with /metrics read 10 times a second (Prometheus scrapes every 15 s by
#    default: this is 150 times that), $ROUNDS rounds each.
# 2. The gateway with bearer and with DPoP-bound tokens (a fresh proof per request):
#    `cargo run --release --example gateway_load`.
#
# Nothing here is asserted: read the figures, and `uptime` before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
WORK="${WORK:-/tmp/keygate-bench}"
OUT="${OUT:-$WORK/ops}"
SECS="${SECS:-10}"
ROUNDS="${ROUNDS:-3}"
mkdir -p "$WORK" "$OUT"

cargo build --release --locked -p keygate --bin keygate --example gateway_load
K="$repo/target/release/keygate"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

uptime | tee "$OUT/uptime-before.txt"
rm -f "$WORK"/ops.db*
RUST_LOG=warn USER_API_KEY='' "$K" serve --listen 127.0.0.1:8080 \
  --database "sqlite://$WORK/ops.db" --admin-listen 127.0.0.1:9464 \
  --rate-per-ip 0 --rate-per-identity 0 --max-connections-per-ip 0 \
  --max-handshakes-per-ip 0 --max-handshakes 0 --max-connections 0 \
  >"$WORK/ops-serve.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 50); do
  curl -fs -o /dev/null http://127.0.0.1:9464/readyz && break
  sleep 0.1
done

load() {  # load NAME: one measured phase, its JSON report in $OUT/NAME.json
  "$K" bench load --flow ws --clients 64 --duration "$SECS" --floor-budget 0 --json \
    --url http://127.0.0.1:8080 --server-pid "$server" | tail -n 1 >"$OUT/$1.json"
  python3 - "$OUT/$1.json" "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: {r['sign_ins_per_s']:.0f} sign-ins/s, p50 {r['p50_ms']:.2f} ms, "
      f"p99 {r['p99_ms']:.2f} ms, server CPU {r['server_cpu_us'] or 0:.0f} µs/sign-in")
EOF
}

for round in $(seq "$ROUNDS"); do
  load "plain-$round"
  ( for _ in $(seq $((SECS * 10 + 50))); do
      curl -fs -o /dev/null http://127.0.0.1:9464/metrics || true
      sleep 0.1
    done ) &
  scraper=$!
  load "scraped-$round"
  kill "$scraper" 2>/dev/null || true
  wait "$scraper" 2>/dev/null || true
done | tee "$OUT/metrics.txt"
python3 - "$OUT" "$ROUNDS" <<'EOF' | tee -a "$OUT/metrics.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def med(kind, field):
    return statistics.median(json.load(open(f"{out}/{kind}-{r}.json"))[field] for r in range(1, rounds + 1))
p, s = med("plain", "sign_ins_per_s"), med("scraped", "sign_ins_per_s")
print(f"median: {p:.0f} sign-ins/s without scraping, {s:.0f} with /metrics read 10x/s "
      f"= {100 * s / p:.1f} %; p50 {med('plain', 'p50_ms'):.2f} vs {med('scraped', 'p50_ms'):.2f} ms")
EOF
curl -fs http://127.0.0.1:9464/metrics | grep -E '^keygate_(signins_total|store_commit_batch_size_(sum|count))' \
  >"$OUT/metrics-sample.txt" || true
kill "$server" 2>/dev/null || true

"$repo/target/release/examples/gateway_load" | tee "$OUT/gateway.txt"
uptime | tee "$OUT/uptime-after.txt"
