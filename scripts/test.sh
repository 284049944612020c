#!/usr/bin/env bash
# Runs every keygate test on a fresh machine: formatting and lints, the Rust unit
# and integration tests (real servers on 127.0.0.1, real SQLite files; then the
# integration suite again on a throwaway PostgreSQL cluster), the
# browser test of web-demo/ in Debian's Chromium driven by playwright-core, the
# JavaScript client's tests (clients/js: Node and Chromium), the
# interop test of tests/interop/ (clients keygate did not write: the Textile example
# client with the real @textile/crypto, a stock RFC 9068 validator), the OpenID
# Provider against relying-party libraries keygate did not write (tests/oidc:
# openid-client, oauth4webapi and Python's Authlib, the user in Chromium; DPoP with
# npm dpop and oauth4webapi), the OpenAPI document against a live server
# (tests/openapi: schemathesis), a real Prometheus scraping keygate under load, and a
# bounded pass of the coverage-guided fuzz targets (FUZZ_SECONDS per target).
# Installs what is missing (Chromium, Node, OpenSSL, Python's venv, Prometheus, curl and PostgreSQL from
# apt, npm packages at the versions of the lock files, the pinned Python packages of
# tests/oidc/requirements.txt and tests/openapi/requirements.txt in their .venv,
# cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "scripts/test.sh: need root to run: $*" >&2; return 1; fi
}

# A section's header, with the time the run has taken so far.
section() { echo "== $* (at ${SECONDS} s)"; }

apt_updated=""
need_apt() {  # need_apt COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  shift
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
# .venv in the current directory with the pinned packages of its requirements.txt.
python_venv() {
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
}
if [ ! -x /usr/bin/chromium ]; then need_apt chromium chromium; fi
need_apt node nodejs npm
need_apt openssl openssl  # the key-file test reads keygate's key files with it

section "cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

section "cargo test"
cargo test --locked --workspace

section "integration tests on PostgreSQL (a throwaway cluster on 127.0.0.1)"
# With the tests ignored on SQLite (#[ignore = "needs KEYGATE_TEST_POSTGRES"]:
# several nodes on one database, a database outage).
pg_dir=$(mktemp -d)
trap 'bash scripts/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
pg_url=$(bash scripts/postgres.sh start "$pg_dir")
KEYGATE_TEST_POSTGRES="$pg_url" \
  KEYGATE_MASTER_KEY="$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" \
  cargo test --locked --workspace --lib --test integration -- --include-ignored
bash scripts/postgres.sh stop "$pg_dir"

section "browser test (web-demo, Chromium)"
(
  cd web-demo/test
  npm ci --no-audit --no-fund --loglevel=error
  KEYGATE_BIN="${CARGO_TARGET_DIR:-$(pwd)/../../target}/debug/keygate" node --test
)

section "JavaScript client (clients/js: Node and Chromium against keygate serve, types, npm pack)"
(
  cd clients/js
  npm ci --no-audit --no-fund --loglevel=error
  KEYGATE_BIN="${CARGO_TARGET_DIR:-$(pwd)/../../target}/debug/keygate" npm test --silent
  npx tsc --noEmit -p examples
  npm pack --dry-run --loglevel=error >/dev/null
)

section "interop test (tests/interop: Textile client, RFC 9068 validator)"
(
  cd tests/interop
  npm ci --no-audit --no-fund --loglevel=error
  KEYGATE_BIN="${CARGO_TARGET_DIR:-$(pwd)/../../target}/debug/keygate" node --test
)

section "OpenID Provider (tests/oidc: openid-client, oauth4webapi, authlib, Chromium)"
(
  cd tests/oidc
  python_venv
  npm ci --no-audit --no-fund --loglevel=error
  KEYGATE_BIN="${CARGO_TARGET_DIR:-$(pwd)/../../target}/debug/keygate" node --test
)

section "OpenAPI document against a live server (tests/openapi: schemathesis)"
(
  cd tests/openapi
  python_venv
  KEYGATE_BIN="${CARGO_TARGET_DIR:-$(pwd)/../../target}/debug/keygate" bash run.sh
)

section "Prometheus scrapes keygate (tests/ops: Debian's prometheus, keygate bench load)"
need_apt prometheus prometheus
need_apt curl curl
KEYGATE_BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/debug/keygate" bash tests/ops/prometheus.sh

# 30 s per target keeps the whole run within its time budget; longer runs:
# FUZZ_SECONDS=600 scripts/fuzz.sh (docs/fuzzing.md).
export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
section "fuzzing (cargo-fuzz, ${FUZZ_SECONDS} s per target)"
bash scripts/fuzz.sh
echo "scripts/test.sh: every section passed in ${SECONDS} s"
