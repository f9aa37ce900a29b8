#!/usr/bin/env bash
# The C ABI's checks (bindings/c, include/dmdelegate.h):
#   1. build the library (cargo build -p dmdelegate-c);
#   2. regenerate the header with the pinned cbindgen and fail on any difference from the
#      committed include/dmdelegate.h;
#   3. compile the header as C11 and as C++17 with -Wall -Wextra -Werror -pedantic;
#   4. build bindings/c/tests/test_api.c against the static library with ASan + UBSan and
#      run it;
#   4b. the same for the dmd_server tests (C host callbacks, servers.h): test_server.c
#      (mutual TLS, Methods 1-4), test_failures.c (failures and rollbacks over mutual TLS)
#      and test_transport.c (the host's own transport, deadlines, expiry, SQLite store);
#      build examples/c with cmake and run it (exit 0 required);
#   5. build every test program again without sanitizers and run it under valgrind
#      (memcheck, full leak check; any error or definite/possible leak fails; the few
#      third-party false positives are suppressed by bindings/c/tests/valgrind.supp, each
#      one justified).
# Last line: "c-tests: N passed, M failed" (N counts the header checks and every test case
# of every run). Exits non-zero on any failure.
#
# Environment: CC (default gcc), CXX (default g++), CBINDGEN (default: cbindgen on PATH or
# in ~/.cargo/bin, installed when missing), C_TESTS_QUICK=1 (fewer delegations over the
# network: test_api and test_server run --quick, for a fast local loop),
# C_TESTS_NO_VALGRIND=1 (skip step 5).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CBINDGEN_VERSION=0.29.4
CC=${CC:-gcc}
CXX=${CXX:-g++}
OUT=$ROOT/target/c-tests
LIB=$ROOT/target/debug/libdmdelegate.a
LIBS=(-lpthread -ldl -lm)
WARN=(-Wall -Wextra -Werror -pedantic)
TEST_ARGS=("$ROOT/vectors")
SERVER_ARGS=()
if [ "${C_TESTS_QUICK:-0}" = 1 ]; then TEST_ARGS+=(--quick); SERVER_ARGS+=(--quick); fi

passed=0
failed=0
step() { printf '\n==> %s\n' "$*"; }
pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }
finish() {
  echo
  echo "c-tests: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# Adds a test program's "PROGRAM: N passed, M failed" line to the totals; a run that
# crashed or printed no summary counts as one failure.
count_run() { # log status what [program]
  local log=$1 status=$2 what=$3 prog=${4:-test_api} line
  line=$(grep -E "^$prog: [0-9]+ passed, [0-9]+ failed\$" "$log" | tail -n 1 || true)
  if [ -z "$line" ]; then
    fail "$what: no summary (exit status $status)"
    return
  fi
  local p f
  p=$(sed -E 's/^[a-z_]+: ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$line")
  f=$(sed -E 's/^[a-z_]+: ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$line")
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail "$what: exit status $status with every case passing (sanitizer or valgrind error)"
  else
    echo "$what: $p passed, $f failed (exit status $status)"
  fi
}

mkdir -p "$OUT"

step "cargo build -p dmdelegate-c"
cargo build -p dmdelegate-c
[ -f "$LIB" ] || { echo "missing $LIB" >&2; exit 1; }

step "include/dmdelegate.h is what cbindgen $CBINDGEN_VERSION generates"
cbindgen_ok() { [ -n "$1" ] && [ "$("$1" --version 2>/dev/null)" = "cbindgen $CBINDGEN_VERSION" ]; }
CBINDGEN=${CBINDGEN:-$(command -v cbindgen || echo "$HOME/.cargo/bin/cbindgen")}
if ! cbindgen_ok "$CBINDGEN"; then
  CBINDGEN=$HOME/.cargo/bin/cbindgen
  if ! cbindgen_ok "$CBINDGEN"; then
    echo "installing cbindgen $CBINDGEN_VERSION"
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
  fi
fi
generated=$OUT/dmdelegate.h
if ! "$CBINDGEN" --quiet --config bindings/c/cbindgen.toml --crate dmdelegate-c \
  --output "$generated" 2>"$OUT/cbindgen.log"; then
  cat "$OUT/cbindgen.log" >&2
  fail "cbindgen failed"
elif diff -u include/dmdelegate.h "$generated"; then
  pass "include/dmdelegate.h is up to date"
else
  fail "include/dmdelegate.h differs from the generated header (diff above; regenerate: cp $generated include/dmdelegate.h)"
fi

step "the header compiles as C11 and as C++17 (${WARN[*]})"
cat >"$OUT/header_c.c" <<'EOF'
#include "dmdelegate.h"
#include "dmdelegate.h" /* the include guard holds */
int main(void) {
    dmd_outcome o = {DMD_STATE_NONE, DMD_STATE_NONE, 0};
    dmd_message_type t = DMD_MESSAGE_TYPE_NOTIF;
    dmd_delegation_type d = DMD_DELEGATION_TYPE_FULL;
    (void)o; (void)t; (void)d;
    return dmd_version() == 0 ? 1 : (int)DMD_OK;
}
EOF
cp "$OUT/header_c.c" "$OUT/header_cpp.cpp"
if "$CC" -std=c11 "${WARN[@]}" -Iinclude -c "$OUT/header_c.c" -o "$OUT/header_c.o"; then
  pass "C11 ($CC)"
else
  fail "C11 ($CC)"
fi
if "$CXX" -std=c++17 "${WARN[@]}" -Iinclude -c "$OUT/header_cpp.cpp" -o "$OUT/header_cpp.o"; then
  pass "C++17 ($CXX)"
else
  fail "C++17 ($CXX)"
fi

# Builds PROGRAM (bindings/c/tests/PROGRAM.c) with ASan + UBSan and runs it with ARGS;
# WHAT names the run in the count.
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
asan_run() { # program what args...
  local prog=$1 what=$2 status log
  shift 2
  log="$OUT/asan-$prog.log"
  "$CC" -std=c11 "${WARN[@]}" -g -O1 "${SAN[@]}" -Iinclude -Ibindings/c/tests "bindings/c/tests/$prog.c" \
    "$LIB" "${LIBS[@]}" -o "$OUT/${prog}_asan"
  set +e
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$OUT/${prog}_asan" "$@" >"$log" 2>&1
  status=$?
  set -e
  cat "$log"
  count_run "$log" "$status" "$what" "$prog"
}

step "test_api with AddressSanitizer and UndefinedBehaviorSanitizer"
asan_run test_api "ASan/UBSan run" "${TEST_ARGS[@]}"

step "test_server (dmd_server over mutual TLS, C host callbacks) with ASan and UBSan"
asan_run test_server "test_server ASan/UBSan run" "${SERVER_ARGS[@]}"

step "test_failures (failures and rollbacks over mutual TLS) with ASan and UBSan"
asan_run test_failures "test_failures ASan/UBSan run" "${SERVER_ARGS[@]}"

step "test_transport (the host's own transport, deadlines, expiry, store) with ASan and UBSan"
asan_run test_transport "test_transport ASan/UBSan run" "${SERVER_ARGS[@]}"

step "examples/c (cmake) builds and runs"
if command -v cmake >/dev/null; then
  rm -rf "$OUT/example-build"
  if cmake -S examples/c -B "$OUT/example-build" >"$OUT/example-cmake.log" 2>&1 &&
    cmake --build "$OUT/example-build" >>"$OUT/example-cmake.log" 2>&1; then
    if "$OUT/example-build/delegate" >"$OUT/example-run.log" 2>&1; then
      tail -n 3 "$OUT/example-run.log"
      pass "examples/c/delegate exits 0"
    else
      cat "$OUT/example-run.log"
      fail "examples/c/delegate failed"
    fi
  else
    cat "$OUT/example-cmake.log"
    fail "examples/c does not build with cmake"
  fi
else
  fail "cmake is not installed"
fi

step "installed package: pkg-config and find_package(dmdelegate)"
prefix="$OUT/prefix"
rm -rf "$prefix"
if PROFILE=debug bash scripts/install-c.sh "$prefix" >"$OUT/install.log" 2>&1; then
  cat >"$OUT/pc_check.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <dmdelegate.h>
int main(void) { const char *v = dmd_version(); printf("dmdelegate %s\n", v); return strlen(v) ? 0 : 1; }
C
  # shellcheck disable=SC2046
  if "$CC" -std=c11 "${WARN[@]}" $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags dmdelegate) \
      "$OUT/pc_check.c" -o "$OUT/pc_check" \
      $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --libs dmdelegate) &&
    LD_LIBRARY_PATH="$prefix/lib" "$OUT/pc_check"; then
    pass "a program built with pkg-config links the installed shared library"
  else
    fail "pkg-config build against the installed library"
  fi
  rm -rf "$OUT/example-installed"
  if cmake -S examples/c -B "$OUT/example-installed" -DCMAKE_PREFIX_PATH="$prefix" \
      >"$OUT/example-installed.log" 2>&1 &&
    grep -q "found by find_package" "$OUT/example-installed.log" &&
    cmake --build "$OUT/example-installed" >>"$OUT/example-installed.log" 2>&1 &&
    "$OUT/example-installed/delegate" >>"$OUT/example-installed.log" 2>&1; then
    pass "examples/c builds with find_package(dmdelegate) and runs"
  else
    cat "$OUT/example-installed.log"
    fail "examples/c with find_package(dmdelegate)"
  fi
else
  cat "$OUT/install.log"
  fail "scripts/install-c.sh"
fi

if [ "${C_TESTS_NO_VALGRIND:-0}" = 1 ]; then
  echo "valgrind run skipped (C_TESTS_NO_VALGRIND=1)"
  finish
  exit
fi

# Builds PROGRAM (bindings/c/tests/PROGRAM.c) without sanitizers and runs it under memcheck
# with ARGS; WHAT names the run in the count.
# Suppressions: bindings/c/tests/valgrind.supp, each one justified there. --num-callers is
# raised so that they can see the frames that identify them.
valgrind_run() { # program what args...
  local prog=$1 what=$2 status
  shift 2
  "$CC" -std=c11 "${WARN[@]}" -g -O0 -Iinclude -Ibindings/c/tests "bindings/c/tests/$prog.c" \
    "$LIB" "${LIBS[@]}" -o "$OUT/$prog"
  set +e
  valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,possible \
    --track-origins=yes --num-callers=64 -s \
    --suppressions="$ROOT/bindings/c/tests/valgrind.supp" --log-file="$OUT/valgrind-$prog.log" \
    "$OUT/$prog" "$@" >"$OUT/valgrind-$prog-run.log" 2>&1
  status=$?
  set -e
  cat "$OUT/valgrind-$prog-run.log"
  echo "--- valgrind summary ($OUT/valgrind-$prog.log)"
  sed -n '/HEAP SUMMARY/,$p' "$OUT/valgrind-$prog.log" | sed -E 's/^(==|--)[0-9]+(==|--) ?//'
  count_run "$OUT/valgrind-$prog-run.log" "$status" "$what" "$prog"
}

step "test_api under valgrind --leak-check=full"
command -v valgrind >/dev/null || { fail "valgrind is not installed"; finish; exit 1; }
valgrind_run test_api "valgrind run" "${TEST_ARGS[@]}"

step "test_server under valgrind --leak-check=full"
valgrind_run test_server "test_server valgrind run" "${SERVER_ARGS[@]}"

step "test_failures under valgrind --leak-check=full"
valgrind_run test_failures "test_failures valgrind run" "${SERVER_ARGS[@]}"

step "test_transport under valgrind --leak-check=full"
valgrind_run test_transport "test_transport valgrind run" "${SERVER_ARGS[@]}"

finish
