#!/usr/bin/env bash
# Runs every measurement in BENCHMARKS.md's first section, on 127.0.0.1:
#
#   scripts/bench.sh                 # results in $OUT (default /tmp/keygate-bench/out)
#   KOA_DIR=path/to/koa-provider scripts/bench.sh
#
# - builds keygate (release) and prefills two databases: 1,000 and 1,000,000
#   sessions (the second takes a minute and ~300 MB, made once, kept in $WORK);
# - starts the koa baseline (KOA_DIR, default ../shared/baselines/koa-provider, copied
#   to $WORK/koa and `npm install`ed) on :8090 when node is present;
# - the crypto floor; WebSocket and HTTP sign-ins against keygate and koa side by side;
#   both flows again open-loop at half of keygate's WebSocket peak; 1k against 1M
#   stored sessions (twice, alternating); memory per idle WebSocket (10,000 open);
#   start-up time (fresh, existing, 1M sessions); the store alone (group commit).
#
# Every server runs with the abuse limits off (one address, many identities).
# Nothing here is asserted: read the figures, and `uptime` before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
WORK="${WORK:-/tmp/keygate-bench}"
OUT="${OUT:-$WORK/out}"
KOA_DIR="${KOA_DIR:-$repo/../shared/baselines/koa-provider}"
SECS="${SECS:-15}"
mkdir -p "$WORK" "$OUT"

cargo build --release --locked --bin keygate
K="$repo/target/release/keygate"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

for db in small:1000 big:1000000; do
  name="${db%%:*}" n="${db#*:}"
  if [ ! -f "$WORK/$name.db" ]; then
    echo "== prefill $name ($n sessions)"
    "$K" bench prefill --database "sqlite://$WORK/$name.db" --sessions "$n"
  fi
done

server=""
start_keygate() {  # start_keygate DBNAME: a fresh copy of a prefilled database
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -f "$WORK"/run.db*
  cp "$WORK/$1.db" "$WORK/run.db"
  cp "$WORK/$1.db.key" "$WORK/run.db.key"
  RUST_LOG=warn USER_API_KEY='' "$K" serve --listen 127.0.0.1:8080 \
    --database "sqlite://$WORK/run.db" --rate-per-ip 0 --rate-per-identity 0 \
    --max-connections-per-ip 0 --max-handshakes-per-ip 0 --max-handshakes 0 \
    --max-connections 0 >"$WORK/serve.log" 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 50); do
    curl -fs -o /dev/null http://127.0.0.1:8080/.well-known/jwks.json && return 0
    sleep 0.1
  done
  echo "keygate did not start: $(tail -5 "$WORK/serve.log")" >&2
  return 1
}

compare=()
if command -v node >/dev/null 2>&1 && [ -f "$KOA_DIR/server.js" ]; then
  mkdir -p "$WORK/koa"
  cp "$KOA_DIR/server.js" "$KOA_DIR/package.json" "$WORK/koa/"
  (cd "$WORK/koa" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  (cd "$WORK/koa" && PORT=8090 AUDIENCE=http://127.0.0.1:8090 exec node server.js \
    >"$WORK/koa.log" 2>&1) &
  koa_pid=$!
  pids+=("$koa_pid")
  for _ in $(seq 50); do
    curl -fs -o /dev/null http://127.0.0.1:8090/.well-known/jwks.json && break
    sleep 0.1
  done
  compare=(--compare http://127.0.0.1:8090)
else
  echo "(no node or no $KOA_DIR: the koa comparison is skipped)"
fi

{ date -u; uptime; nproc; } >"$OUT/start.txt"
start_keygate small
echo "== floor";      "$K" bench floor --budget 2 | tee "$OUT/floor.txt"
for flow in ws http; do
  echo "== $flow, keygate and koa"
  "$K" bench load --flow "$flow" --clients 64 --duration "$SECS" "${compare[@]}" --json \
    | tee "$OUT/$flow.txt"
done
echo "== first sign-ins (a new key every time)"
"$K" bench load --flow ws --clients 64 --duration "$SECS" --new-keys --floor-budget 0 --json \
  | tee "$OUT/ws-new-keys.txt"
if [ ${#compare[@]} -gt 0 ]; then
  echo "== the independent load generator (Node.js): keygate, then koa"
  NODE_PATH="$WORK/koa/node_modules" node scripts/loadgen.cjs --clients 64 --seconds "$SECS" \
    "keygate=ws://127.0.0.1:8080/ws/userauth=$server" \
    "koa=ws://127.0.0.1:8090/ws/userauth=$koa_pid" \
    | tee "$OUT/node.txt"
fi
half=$(grep '"target":"keygate"' "$OUT/ws.txt" | head -1 \
  | python3 -c 'import sys,json; print(int(json.load(sys.stdin)["sign_ins_per_s"] / 2))')
for flow in ws http; do
  echo "== $flow at half of the WebSocket peak ($half/s)"
  "$K" bench load --flow "$flow" --clients 256 --rate "$half" --duration "$SECS" \
    --floor-budget 0 --json | tee "$OUT/$flow-half.txt"
done
for round in 1 2; do
  for db in small big; do
    echo "== $db database, round $round"
    start_keygate "$db"
    "$K" bench load --flow ws --clients 64 --duration 10 --floor-budget 0 --json \
      | tee "$OUT/scale-$db-$round.txt"
  done
done
start_keygate small
echo "== idle";       "$K" bench idle --connections 10000 | tee "$OUT/idle.txt"
kill "$server"; wait "$server" 2>/dev/null || true; server=""
echo "== startup"
rm -f "$WORK"/startup.db*
"$K" bench startup --database "sqlite://$WORK/startup.db" --runs 5 --fresh | tee "$OUT/startup-fresh.txt"
"$K" bench startup --database "sqlite://$WORK/startup.db" --runs 5 | tee "$OUT/startup.txt"
rm -f "$WORK"/run.db*; cp "$WORK/big.db" "$WORK/run.db"; cp "$WORK/big.db.key" "$WORK/run.db.key"
"$K" bench startup --database "sqlite://$WORK/run.db" --runs 5 | tee "$OUT/startup-1m.txt"
echo "== store alone"
rm -f "$WORK"/st.db*
"$K" bench store --database "sqlite://$WORK/st.db" --concurrency 256 --count 50000 \
  | tee "$OUT/store.txt"
{ date -u; uptime; } >"$OUT/end.txt"
echo "results in $OUT"
