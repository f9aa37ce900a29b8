#!/usr/bin/env bash
# Per-call overhead of the codec (decode + validate, encode) from C and from Python against
# the same call in Rust, on the golden vectors (vectors/valid), in one run:
#   - Rust:   dmdelegate-bench ffi-baseline        (bench/src/ffi.rs)
#   - C:      bench/ffi/codec_bench.c, against libdmdelegate.so (include/dmdelegate.h)
#   - Python: bench/ffi/codec_bench.py, the dmdelegate package installed from a wheel
# The three run PASSES times, alternating (Rust, C, Python, Rust, ...), so that a noisy
# moment hits one pass and not one language; each figure is the fastest pass.
# bench/ffi/report.py then checks the results and prints the table (Markdown).
#
# Fails (exit 1) if any language reports an error or any vector's encoding differs, in
# length or in any byte, from Rust's.
#
# Usage: scripts/bench-ffi.sh [--smoke] [--iterations N] [--rounds R] [--passes P] [--vectors DIR]
#   default: release builds, 10000 iterations, 5 rounds, 3 passes (about 4 minutes on the
#   2-core machine, builds excluded), vectors/valid;
#   --smoke: debug builds of the C library and the harness (the Python module is always a
#   release build, as scripts/python-tests.sh's pip install makes it), 200 iterations,
#   1 round, 1 pass; only the checks are reported, the timings of mixed builds mean
#   nothing (CI). Options after --smoke override its counts.
# Environment: CC (default gcc), DMDELEGATE_VENV (default target/python-venv, the virtual
# environment of scripts/python-tests.sh).
# Results: target/ffi-bench/results/ (the JSON of every run, every language's encodings).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

smoke=0
iterations=10000
rounds=5
passes=3
vectors=$ROOT/vectors/valid
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1; iterations=200; rounds=1; passes=1 ;;
    --iterations) iterations=${2:?--iterations needs a number}; shift ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift ;;
    --passes) passes=${2:?--passes needs a number}; shift ;;
    --vectors) vectors=$(cd "${2:?--vectors needs a directory}" && pwd); shift ;;
    *) echo "usage: $0 [--smoke] [--iterations N] [--rounds R] [--passes P] [--vectors DIR]" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n==> %s\n' "$*" >&2; }

if [ "$smoke" = 1 ]; then profile=debug; cargo_profile=(); else profile=release; cargo_profile=(--release); fi
OUT=$ROOT/target/ffi-bench
RESULTS=$OUT/results
LIBDIR=$ROOT/target/$profile

step "cargo build ${cargo_profile[*]} -p dmdelegate-c -p dmdelegate-bench"
cargo build -q "${cargo_profile[@]}" -p dmdelegate-c -p dmdelegate-bench

step "bench/ffi/codec_bench.c against $LIBDIR/libdmdelegate.so"
mkdir -p "$OUT"
"${CC:-gcc}" -O2 -Wall -Wextra -Werror -Iinclude bench/ffi/codec_bench.c \
  -L"$LIBDIR" -l:libdmdelegate.so -Wl,-rpath,"$LIBDIR" -o "$OUT/codec_bench"

step "the Python module: maturin build --release, installed into the virtual environment"
venv="${DMDELEGATE_VENV:-$PWD/target/python-venv}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
pip install -q --disable-pip-version-check "maturin>=1.16,<2"
rm -rf "$OUT/wheels"
maturin build --quiet --release -m python/Cargo.toml -o "$OUT/wheels"
pip install -q --disable-pip-version-check --no-index --no-deps --force-reinstall "$OUT"/wheels/dmdelegate-*.whl
# From outside the source tree, so that the installed package is the one imported.
(cd "$OUT" && python -c 'import dmdelegate, sys; sys.stderr.write("dmdelegate from %s\n" % dmdelegate.__file__)')

rm -rf "$RESULTS"
mkdir -p "$RESULTS"/encoded/{rust,c,python}
common=(--iterations "$iterations" --rounds "$rounds" --vectors "$vectors")
status=0
run() { # language pass command...
  local lang=$1 pass=$2
  shift 2
  if ! "$@" --encoded-dir "$RESULTS/encoded/$lang" >"$RESULTS/$lang-$pass.json"; then
    echo "bench-ffi: $lang (pass $pass) failed" >&2
    status=1
  fi
}
for pass in $(seq 1 "$passes"); do
  step "pass $pass of $passes: Rust, C, Python ($iterations iterations × $rounds rounds per call and vector)"
  run rust "$pass" "$ROOT/target/$profile/dmdelegate-bench" ffi-baseline --json "${common[@]}"
  run c "$pass" "$OUT/codec_bench" "${common[@]}"
  run python "$pass" python "$ROOT/bench/ffi/codec_bench.py" "${common[@]}"
done

if [ "$smoke" = 1 ]; then
  step "checks (smoke: debug builds, timings not reported)"
  python "$ROOT/bench/ffi/report.py" --checks-only "$RESULTS" || status=1
else
  step "results (release builds)"
  python "$ROOT/bench/ffi/report.py" "$RESULTS" || status=1
fi
exit "$status"
