#!/usr/bin/env bash
# Installs the C library: PREFIX/lib/libdmdelegate.{a,so}, PREFIX/include/dmdelegate.h,
# PREFIX/lib/pkgconfig/dmdelegate.pc and PREFIX/lib/cmake/dmdelegate/ (find_package).
#
#   scripts/install-c.sh [PREFIX]          # default /usr/local; release build
#   PROFILE=debug scripts/install-c.sh DIR # the debug build (what the C tests use)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-/usr/local}"
profile="${PROFILE:-release}"
case "$profile" in
  release) cargo build -q -p dmdelegate-c --release; dir=target/release ;;
  debug | dev) cargo build -q -p dmdelegate-c; dir=target/debug ;;
  *) echo "install-c.sh: PROFILE must be release or debug" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mkdir -p "$prefix/lib/pkgconfig" "$prefix/lib/cmake/dmdelegate" "$prefix/include"
install -m 0644 "$dir/libdmdelegate.a" "$prefix/lib/"
install -m 0755 "$dir/libdmdelegate.so" "$prefix/lib/"
install -m 0644 include/dmdelegate.h "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" bindings/c/dmdelegate.pc.in \
  >"$prefix/lib/pkgconfig/dmdelegate.pc"
sed -e "s|@VERSION@|$version|g" bindings/c/dmdelegateConfig.cmake.in \
  >"$prefix/lib/cmake/dmdelegate/dmdelegateConfig.cmake"
echo "installed dmdelegate $version ($profile) into $prefix"
