#!/usr/bin/env bash
# Runs keygate's coverage-guided fuzz targets (fuzz/, cargo-fuzz + libFuzzer,
# AddressSanitizer) for a bounded time each, and fails if any target crashes.
#
#   scripts/fuzz.sh                    # every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh token challenge
#
# Installs cargo-fuzz from crates.io if it is missing. Each target fuzzes a copy of
# its checked-in seeds (fuzz/corpus/<target>/), so a run never changes the repo;
# FUZZ_KEEP_CORPUS=DIR keeps the grown corpora in DIR instead of deleting them.
# A crash input is saved under fuzz/artifacts/<target>/ (git-ignored) and the
# command that replays it is printed. The build (every dependency, instrumented)
# goes to fuzz/target, or to FUZZ_TARGET_DIR: point that outside the clone to
# reuse one build across fresh clones on the same machine. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
all_targets=(identity challenge token signin_frame apikey)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); this machine has only
# the stable toolchain, whose compiler accepts them when bootstrapping is allowed.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The same build options for `build` and `run`, or `run` would build again.
build_opts=()
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then build_opts+=(--target-dir "$FUZZ_TARGET_DIR"); fi

echo "== cargo fuzz build (all targets)"
start=$(date +%s)
cargo fuzz build "${build_opts[@]}"
echo "built in $(($(date +%s) - start)) s"

work="$(mktemp -d)"
if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
  mkdir -p "$FUZZ_KEEP_CORPUS"
  work="$(cd "$FUZZ_KEEP_CORPUS" && pwd)"
else
  trap 'rm -rf "$work"' EXIT
fi

failed=()
for t in "${targets[@]}"; do
  if [ ! -d "fuzz/corpus/$t" ]; then
    echo "scripts/fuzz.sh: no target named $t (have: ${all_targets[*]})" >&2
    exit 2
  fi
  echo "== fuzz $t for ${seconds} s"
  rm -rf "${work:?}/$t"
  cp -R "fuzz/corpus/$t" "$work/$t"
  log="$work/$t.log"
  # -timeout: an input that takes over 10 s is a hang, and counts as a failure.
  if cargo fuzz run "${build_opts[@]}" "$t" "$work/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    echo "ok: $t: ${execs:-?} executions (${rate:-?}/s), ${cov:-cov: ?}, corpus $(find "$work/$t" -type f | wc -l) files"
  else
    echo "FAILED: $t; the last lines of its log:" >&2
    tail -40 "$log" >&2
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  for t in "${failed[@]}"; do
    for a in fuzz/artifacts/"$t"/*; do
      [ -e "$a" ] && echo "  replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_opts[*]} $t $a" >&2
    done
  done
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds} s each, no crash"
