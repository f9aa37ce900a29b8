#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS seconds each
# (default 30), seeded from fuzz/seeds/<target>/ and the golden vectors. A crash fails the
# run; its input is copied to fuzz/regressions/<target>/, which core/tests/fuzz_inputs.rs
# replays in every ordinary test run once the bug is fixed.
#
# libFuzzer's instrumentation needs the nightly toolchain: used when installed (rustup),
# otherwise installed with rustup; cargo-fuzz is installed from crates.io when missing.
# Usage: scripts/fuzz.sh [TARGET...]   Environment: FUZZ_SECONDS, FUZZ_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(message_decode tnds_decode acl_parse syncml_decode batch_decode)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

work=target/fuzz-corpus
status=0
for t in "${targets[@]}"; do
  corpus=$work/$t
  mkdir -p "$corpus" "fuzz/regressions/$t"
  cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  if [ "$t" = message_decode ]; then
    cp -n vectors/valid/*.xml vectors/invalid/*.xml "$corpus"/ 2>/dev/null || true
  fi
  if [ "$t" = batch_decode ]; then
    cp -n vectors/batch/*.xml "$corpus"/ 2>/dev/null || true
  fi
  echo "==> fuzz $t for ${seconds}s"
  artifacts=fuzz/artifacts/$t
  mkdir -p "$artifacts"
  # Debug assertions on, optimised: what the properties need, at fuzzing speed.
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --debug-assertions "$t" "$corpus" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tail -n 25; then
    status=1
  fi
  for crash in "$artifacts"/*; do
    [ -e "$crash" ] || continue
    cp "$crash" "fuzz/regressions/$t/"
    echo "fuzz: $t crashed on $crash (copied to fuzz/regressions/$t/)" >&2
    status=1
  done
done
exit $status
