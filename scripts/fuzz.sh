#!/usr/bin/env bash
# Runs every fuzz target under cargo-fuzz (libFuzzer) for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Installs cargo-fuzz and the nightly toolchain it needs when they are missing. Where no
# nightly can be had (offline), it says so and runs the same entry points on stable
# instead, through the bounded harness tests/tests/safe_operation_fuzz.rs with more cases
# (SHADOWLIB_FUZZ_CASES). A crash found is left in fuzz/artifacts/<target>/; minimise it
# (`cargo +nightly fuzz tmin <target> <file>`), fix it, and add the input to the
# regressions in tests/tests/safe_operation_fuzz.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(policy_file budget_file read_rules json_comparator http_copy admin_request delta_frame)
fi

stable_fallback() {
  echo "fuzz: $1; running the bounded stable harness instead"
  SHADOWLIB_FUZZ_CASES="${SHADOWLIB_FUZZ_CASES:-20000}" \
    cargo test -p tests --test safe_operation_fuzz --release
  exit 0
}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal || stable_fallback "no nightly toolchain"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked || stable_fallback "cargo-fuzz could not be installed"
fi

cd fuzz
mkdir -p logs
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${seconds}s"
  start=$(date +%s)
  # -rss_limit_mb keeps a runaway input from taking the machine; -max_len bounds inputs.
  # A crash ends this target's run, not the others': every target gets its time, and the
  # crashes are listed at the end.
  if cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$target.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "logs/$target.log" || true
  else
    failed+=("$target")
    grep -E 'panicked at|^(thread|SUMMARY|==[0-9]+== ERROR)' "logs/$target.log" | head -n 5 || true
  fi
  echo "fuzz: $target ran $(( $(date +%s) - start ))s (build included)"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}: see fuzz/logs/ and fuzz/artifacts/"
  exit 1
fi
echo "fuzz: no crash in ${#targets[@]} targets"
