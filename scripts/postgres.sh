#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, on 127.0.0.1 only.
#
#   scripts/postgres.sh start DIR   # initdb + start in DIR; prints the base URL
#   scripts/postgres.sh stop DIR    # stop it (DIR can then be deleted)
#   scripts/postgres.sh resume DIR  # start a stopped cluster again, on its port
#
# The URL it prints (postgres://keygate@127.0.0.1:PORT/) is what
# KEYGATE_TEST_POSTGRES takes; each test server creates its own database there.
# PostgreSQL refuses to run as root: as root, the cluster runs as the user
# `postgres` (created if missing). Finds initdb/pg_ctl on PATH or in Debian's
# /usr/lib/postgresql/<version>/bin; installs postgresql from apt if neither.
set -euo pipefail

pg_bin() {  # directory holding initdb and pg_ctl
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  return 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "scripts/postgres.sh: need root to run: $*" >&2; return 1; fi
}

# Runs a command as the cluster's owner: this user, or `postgres` when root (from
# /, since the owner may not be allowed into the current directory).
as_owner() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# A port nothing listens on: a random one that refuses a connection.
# Below the kernel's ephemeral range (32768-60999 by default): a port there can be
# some connection's source port, which refuses connections yet cannot be bound
# (seen once: "could not bind ... Address already in use" under heavy loopback use).
free_port() {
  local p low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 12000 ] 2>/dev/null || low=32768
  for _ in $(seq 50); do
    p=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "scripts/postgres.sh: no free port found" >&2
  return 1
}

start() {
  local dir=$1 bin port
  if ! bin=$(pg_bin); then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(pg_bin)
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  port=$(free_port)
  echo "$port" >"$dir/port"
  as_owner "$bin/initdb" -D "$dir/data" -U keygate --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  run "$dir" "$bin"
  echo "postgres://keygate@127.0.0.1:$port/"
}

# Starts the cluster in DIR on the port it was made with.
run() {
  local dir=$1 bin=$2 port
  port=$(cat "$dir/port")
  # Sockets go in DIR, not /var/run/postgresql, which may not exist or be writable.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on" start >/dev/null \
    || { cat "$dir/server.log" >&2; return 1; }
}

resume() {
  local dir=$1
  run "$dir" "$(pg_bin)"
}

stop() {
  local dir=$1 bin
  bin=$(pg_bin) || return 0
  [ -d "$dir/data" ] || return 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  resume) resume "${2:?usage: $0 resume DIR}" ;;
  *) echo "usage: $0 start DIR | stop DIR | resume DIR" >&2; exit 2 ;;
esac
