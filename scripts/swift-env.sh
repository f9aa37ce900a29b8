#!/usr/bin/env bash
# A Debian trixie root with Swift (Debian's `swiftlang`) for the Swift bindings' tests.
# Debian bookworm ships no Swift; trixie does. The root lives outside the repo, in
#   ${DMD_SWIFT_ROOT:-$HOME/.cache/dmdelegate/swift-trixie}
# and is created on first use (debootstrap + apt inside it; needs root or sudo, and the
# package mirror; a few minutes). It is built in ROOT.tmp, stamped, then renamed to ROOT,
# so an interrupted build is never trusted: a ROOT without a matching stamp is rebuilt.
#
# Usage:
#   scripts/swift-env.sh ensure                  create the root if missing; print its path
#   scripts/swift-env.sh run WORKDIR -- CMD...   run CMD inside the root, in WORKDIR, which
#                                                is bind-mounted at the same absolute path
#                                                (plus /proc and /dev); exit status is CMD's
#   scripts/swift-env.sh umount                  remove any mounts left under the root
#   scripts/swift-env.sh path                    print the root path (no checks)
#
# Inside, PATH is the standard one, HOME=/root (SwiftPM's caches persist in the root),
# LD_LIBRARY_PATH=/usr/libexec/swift/lib/swift/linux (append your own dirs with
# DMD_SWIFT_LD_LIBRARY_PATH=dir1:dir2), and DMD_SWIFT_MODULE_CACHE is an absolute path to
# hand to swiftc as `-module-cache-path "$DMD_SWIFT_MODULE_CACHE"` (for SwiftPM:
# `-Xswiftc -module-cache-path -Xswiftc "$DMD_SWIFT_MODULE_CACHE"`).
#
# Mounts are made in a private mount namespace (unshare -m) when possible, so they vanish
# with the process even if it is killed; otherwise on the host, serialised by a lock and
# removed by a trap. Environment: DMD_SWIFT_ROOT (root path), DMD_SWIFT_MIRROR (Debian
# mirror URL; default: the one this machine's apt uses, else debootstrap's default).
set -euo pipefail

SUITE=trixie
PACKAGES=(swiftlang libc6-dev libstdc++-14-dev)
RECIPE="dmdelegate-swift-env v1 suite=$SUITE packages=${PACKAGES[*]}"
SWIFT_LIB=/usr/libexec/swift/lib/swift/linux
MODULE_CACHE=/var/cache/dmdelegate-swift-module-cache
INNER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

ROOT=${DMD_SWIFT_ROOT:-$HOME/.cache/dmdelegate/swift-trixie}
# Canonical, as /proc/self/mountinfo names mount points that way.
ROOT=$(realpath -m -- "$ROOT")
if [ -z "$ROOT" ] || [ "$ROOT" = / ]; then
  echo "swift-env: bad DMD_SWIFT_ROOT" >&2
  exit 1
fi
STAMP_NAME=.dmdelegate-swift-env-ready
LOCK=$ROOT.lock

log() { printf 'swift-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "needs root (chroot, mount) and sudo is missing"
    exec sudo DMD_SWIFT_ROOT="$ROOT" ${DMD_SWIFT_MIRROR:+DMD_SWIFT_MIRROR="$DMD_SWIFT_MIRROR"} \
      ${DMD_SWIFT_LD_LIBRARY_PATH:+DMD_SWIFT_LD_LIBRARY_PATH="$DMD_SWIFT_LD_LIBRARY_PATH"} \
      bash "$0" "$@"
  fi
}

# Mount points under $1 (deepest first), as the kernel lists them.
mounts_under() {
  awk -v p="$1" '{ gsub(/\\040/, " ", $5); if ($5 == p || index($5, p "/") == 1) print $5 }' \
    /proc/self/mountinfo | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

umount_all_under() {
  local m
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done < <(mounts_under "$1")
}

# rm -rf that never follows a bind mount into the host (/dev, the repo).
safe_rmtree() {
  local dir=$1
  [ -e "$dir" ] || return 0
  umount_all_under "$dir"
  if [ -n "$(mounts_under "$dir")" ]; then
    die "mounts remain under $dir; not deleting it"
  fi
  rm -rf --one-file-system -- "$dir"
}

# The Debian mirror this machine's apt uses (first non-security archive), or nothing.
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: take URIs of an enabled "deb" stanza whose Suites has a plain suite.
    awk '
      function flush() {
        if (uris != "" && types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && plain) print uris
        uris = ""; types = ""; enabled = ""; plain = 0
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:" { types = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      tolower($1) == "uris:" { uris = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) plain = 1 }
      END { flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # one-line format: deb [options] URI suite components
    awk '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if (i + 1 <= NF && $(i + 1) !~ /-/) print $i
      }
    ' "$f"
  done
}

# Host apt settings the root needs too (proxies, Check-Valid-Until for snapshot mirrors).
copy_acquire_config() {
  local f dst=$1/etc/apt/apt.conf.d
  mkdir -p "$dst"
  for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] || continue
    if grep -qE '^[[:space:]]*Acquire' "$f"; then
      grep -E '^[[:space:]]*Acquire' "$f" > "$dst/50host-$(basename "$f")"
    fi
  done
}

# Run "$@" as a child, forwarding INT/TERM/HUP to it (bash would otherwise run traps only
# after a foreground child ends); returns the child's status.
run_fg() {
  local child rc=0
  "$@" <&0 &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM HUP
  wait "$child" || rc=$?
  # An interrupted wait returns 128+signal at once: wait again for the child's own status.
  while kill -0 "$child" 2>/dev/null; do
    rc=0
    wait "$child" || rc=$?
  done
  trap - INT TERM HUP
  return "$rc"
}

# chroot into $1 with /proc and /dev (and optionally a work dir) mounted, run the rest.
# Called in a private mount namespace when unshare works; mounts are undone by a trap.
with_mounts() {
  local root=$1 workdir=$2; shift 2
  local mounted=()
  cleanup_mounts() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
      umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null ||
        log "warning: cannot unmount ${mounted[$i]}"
    done
    mounted=()
  }
  trap cleanup_mounts EXIT
  # Leftovers from a killed run (only possible without unshare) are removed first.
  umount_all_under "$root"
  mkdir -p "$root/proc" "$root/dev"
  mount -t proc proc "$root/proc" || die "cannot mount proc on $root/proc"
  mounted+=("$root/proc")
  mount --bind /dev "$root/dev" || die "cannot bind-mount /dev on $root/dev"
  mounted+=("$root/dev")
  if [ -n "$workdir" ]; then
    mkdir -p "$root$workdir"
    mount --bind "$workdir" "$root$workdir" || die "cannot bind-mount $workdir"
    mounted+=("$root$workdir")
  fi
  local rc=0
  # shellcheck disable=SC2016 # $1/$@ belong to the inner sh
  run_fg chroot "$root" /usr/bin/env -i \
    HOME=/root PATH="$INNER_PATH" LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    DEBIAN_FRONTEND=noninteractive \
    LD_LIBRARY_PATH="$SWIFT_LIB${DMD_SWIFT_LD_LIBRARY_PATH:+:$DMD_SWIFT_LD_LIBRARY_PATH}" \
    DMD_SWIFT_MODULE_CACHE="$MODULE_CACHE" \
    ${CI:+CI="$CI"} ${http_proxy:+http_proxy="$http_proxy"} \
    ${https_proxy:+https_proxy="$https_proxy"} ${no_proxy:+no_proxy="$no_proxy"} \
    /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "${workdir:-/}" "$@" 8>&- 9>&- || rc=$?
  cleanup_mounts
  trap - EXIT
  return "$rc"
}

# Run with_mounts in a private mount namespace if possible (mounts die with it), else on
# the host under an exclusive lock (so existing mounts under the root are leftovers).
mounted_run() {
  if [ -z "${DMD_SWIFT_IN_NS:-}" ] && unshare --mount --propagation private true 2>/dev/null; then
    run_fg env DMD_SWIFT_IN_NS=1 unshare --mount --propagation private bash "$0" __with_mounts "$@"
  else
    local rc=0
    exec 8>>"$1.mount.lock"
    flock -x 8
    with_mounts "$@" || rc=$?
    exec 8>&-
    return "$rc"
  fi
}

build_root() {
  local tmp=$ROOT.tmp mirror=${DMD_SWIFT_MIRROR:-}
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends debootstrap >&2
  fi
  [ -n "$mirror" ] || mirror=$(host_mirror | head -n1)
  safe_rmtree "$tmp"
  mkdir -p "$(dirname "$ROOT")"
  log "debootstrap --variant=minbase $SUITE into $tmp${mirror:+ from $mirror}"
  local t0=$SECONDS
  # In a private mount namespace when possible, so the /proc and /sys debootstrap mounts
  # inside the target cannot outlive it.
  local ns=()
  unshare --mount --propagation private true 2>/dev/null && ns=(unshare --mount --propagation private)
  # shellcheck disable=SC2086
  run_fg "${ns[@]}" debootstrap --variant=minbase "$SUITE" "$tmp" $mirror >&2 ||
    { safe_rmtree "$tmp"; die "debootstrap failed"; }
  cp -L /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
  copy_acquire_config "$tmp"
  log "installing ${PACKAGES[*]} inside the root"
  mounted_run "$tmp" "" sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" && apt-get clean' \
    sh "${PACKAGES[@]}" >&2 || { safe_rmtree "$tmp"; die "installing ${PACKAGES[*]} failed"; }
  mkdir -p "$tmp$MODULE_CACHE"
  {
    echo "$RECIPE"
    echo "created $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - t0))s"
  } > "$tmp/$STAMP_NAME"
  sync -f "$tmp/$STAMP_NAME" 2>/dev/null || sync
  mv -T "$tmp" "$ROOT"
  log "root ready in $((SECONDS - t0))s: $ROOT"
}

ensure() {
  stamp_valid && return 0
  mkdir -p "$(dirname "$ROOT")"
  exec 9>>"$LOCK"
  flock -x 9
  if ! stamp_valid; then
    if [ -e "$ROOT" ]; then
      log "discarding incomplete or outdated root $ROOT"
      local old=$ROOT.old.$$
      umount_all_under "$ROOT"
      mv -T "$ROOT" "$old"
      safe_rmtree "$old"
    fi
    build_root
  fi
  exec 9>&-
}

stamp_valid() {
  [ -f "$ROOT/$STAMP_NAME" ] && [ "$(head -n1 "$ROOT/$STAMP_NAME")" = "$RECIPE" ]
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  path)
    echo "$ROOT"
    ;;
  ensure)
    need_root ensure "$@"
    ensure
    echo "$ROOT"
    ;;
  run)
    if [ $# -lt 3 ] || [ "$2" != "--" ]; then
      die "usage: $0 run WORKDIR -- CMD..."
    fi
    need_root run "$@"
    workdir=$(cd "$1" && pwd -P) || die "no such directory: $1"
    shift 2
    ensure
    mounted_run "$ROOT" "$workdir" "$@"
    ;;
  umount)
    need_root umount
    umount_all_under "$ROOT"
    umount_all_under "$ROOT.tmp"
    ;;
  __with_mounts)
    with_mounts "$@"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
