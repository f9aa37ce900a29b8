#!/usr/bin/env bash
# Every check the project has: formatting, lints, all tests, schema validation of the
# golden vectors, and the demo. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Tools the checks need, installed when missing (CI machines start bare).
if ! command -v xmllint >/dev/null 2>&1; then
  step "installing xmllint (libxml2-utils)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libxml2-utils >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq libxml2-utils >/dev/null
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "C ABI: header, C11/C++17, ASan/UBSan, valgrind"
need=""
for tool in gcc g++ valgrind pkg-config cmake; do
  command -v "$tool" >/dev/null 2>&1 || need="$need $tool"
done
if [ -n "$need" ]; then
  step "installing$need"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq $need >/dev/null
fi
bash scripts/c-tests.sh

step "Python: pip install ./python, pytest, stubtest, mypy --strict"
bash scripts/python-tests.sh

step "Kotlin: generated bindings, Maven module (JUnit 5), example"
bash scripts/kotlin-tests.sh

step "Interop matrix: Rust CLI, C, Python and Kotlin servers as separate processes (mutual TLS)"
bash scripts/interop.sh

step "Swift: generated bindings, SwiftPM package (XCTest) in a Debian trixie root"
bash scripts/swift-tests.sh

step "benchmark harness: a short smoke run (figures in BENCHMARKS.md come from release runs)"
cargo run -q -p dmdelegate-bench -- all --n 40 --concurrency 4 --inflight 200 --json >/dev/null
echo "bench: every benchmark ran with zero errors"

step "codec from C and Python vs Rust: errors and byte-identical encodings"
bash scripts/bench-ffi.sh --smoke

step "fuzzing: every cargo-fuzz target for a bounded time (scripts/fuzz.sh)"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz.sh

step "golden vectors against the XSD"
bash scripts/validate-vectors.sh

step "demos"
cargo run -q -p dmdelegate --example demo >/dev/null
echo "in-process demo: every method completed"
cargo run -q -p dmdelegate-cli -- demo >/dev/null
echo "dmdelegate demo (HTTPS, mutual TLS): every method completed"
