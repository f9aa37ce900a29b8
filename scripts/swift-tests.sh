#!/usr/bin/env bash
# The Swift bindings' checks (bindings/swift, the SwiftPM package `DMDelegate`):
#   1. build the library (cargo build -p dmdelegate-uniffi);
#   2. generate the Swift sources from it with the workspace's uniffi-bindgen into the
#      package (not committed, see .gitignore):
#        Sources/DMDelegate/DMDelegate.swift            the Swift API
#        Sources/DMDelegateFFI/include/DMDelegateFFI.h  the scaffolding's C declarations
#        Sources/DMDelegateFFI/include/module.modulemap the generated module map, plus
#                                                       `link "dmdelegate_uniffi"`
#      (files whose content did not change are left alone, so SwiftPM rebuilds nothing);
#   3. make sure the Swift root exists (scripts/swift-env.sh ensure: a Debian trixie root
#      with Swift 6, outside the repo; created on first use);
#   4. inside it: swift build --build-tests, then swift test, linking
#      target/debug/libdmdelegate_uniffi.so.
# Exits non-zero when a step or any test fails.
#
# Environment: SWIFT_TEST_FILTER (passed to `swift test --filter`, for a fast local loop),
# DMD_SWIFT_ROOT and DMD_SWIFT_MIRROR (see scripts/swift-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PKG=bindings/swift
LIBDIR=$ROOT/target/debug
LIB=$LIBDIR/libdmdelegate_uniffi.so

t0=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - t0))"; }

step "cargo build -p dmdelegate-uniffi"
cargo build -p dmdelegate-uniffi
[ -f "$LIB" ] || { echo "swift-tests: missing $LIB" >&2; exit 1; }

step "generate the Swift bindings from $LIB"
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
cargo run -q -p uniffi-bindgen -- generate --library "$LIB" --language swift --no-format \
  --out-dir "$gen"
for f in DMDelegate.swift DMDelegateFFI.h DMDelegateFFI.modulemap; do
  [ -s "$gen/$f" ] || { echo "swift-tests: uniffi-bindgen wrote no $f" >&2; exit 1; }
done
# The module map SwiftPM wants: named module.modulemap, next to the header, and linking
# the library (uniffi's map leaves linking to the build; a system-library target can't).
# `use "Darwin"` is harmless off Apple platforms (clang checks `use` only with
# -fmodules-decluse), so the generated map is kept as it is otherwise.
grep -q '^module DMDelegateFFI ' "$gen/DMDelegateFFI.modulemap" ||
  { echo "swift-tests: unexpected module map:" >&2; cat "$gen/DMDelegateFFI.modulemap" >&2; exit 1; }
sed 's/^\([[:space:]]*\)export \*$/\1link "dmdelegate_uniffi"\n&/' \
  "$gen/DMDelegateFFI.modulemap" >"$gen/module.modulemap"
grep -q 'link "dmdelegate_uniffi"' "$gen/module.modulemap" ||
  { echo "swift-tests: could not add the link line to the module map" >&2; exit 1; }
install_if_changed() { # src dst
  mkdir -p "$(dirname "$2")"
  if ! cmp -s "$1" "$2"; then
    cp "$1" "$2"
    echo "updated $2"
  fi
}
install_if_changed "$gen/DMDelegate.swift" "$PKG/Sources/DMDelegate/DMDelegate.swift"
install_if_changed "$gen/DMDelegateFFI.h" "$PKG/Sources/DMDelegateFFI/include/DMDelegateFFI.h"
install_if_changed "$gen/module.modulemap" "$PKG/Sources/DMDelegateFFI/include/module.modulemap"

step "the Swift root (scripts/swift-env.sh ensure)"
swift_root=$(bash scripts/swift-env.sh ensure)
echo "$swift_root"

step "swift build and swift test in the root"
# Inside the root: the repo is mounted at the same path, the module cache path comes
# from swift-env.sh, the library is found by -L at link time and by rpath (and
# LD_LIBRARY_PATH) at run time. The build directory is handed back to the caller's user
# (the root runs as root).
filter=()
[ -n "${SWIFT_TEST_FILTER:-}" ] && filter=(--filter "$SWIFT_TEST_FILTER")
# shellcheck disable=SC2016 # expanded by the inner shell
DMD_SWIFT_LD_LIBRARY_PATH=$LIBDIR bash scripts/swift-env.sh run "$ROOT" -- sh -c '
  set -e
  owner=$1 libdir=$2; shift 2
  cd bindings/swift
  flags="-Xswiftc -module-cache-path -Xswiftc $DMD_SWIFT_MODULE_CACHE -Xlinker -L$libdir -Xlinker -rpath -Xlinker $libdir"
  status=0
  start=$(date +%s)
  if swift build --build-tests $flags; then
    echo "swift build: $(( $(date +%s) - start ))s"
    start=$(date +%s)
    swift test --skip-build $flags "$@" || status=$?
    echo "swift test: $(( $(date +%s) - start ))s, exit status $status"
  else
    status=$?
  fi
  [ "$owner" = 0:0 ] || chown -R "$owner" .build 2>/dev/null || true
  exit $status
' sh "$(id -u):$(id -g)" "$LIBDIR" "${filter[@]}"

step "swift-tests: passed"
