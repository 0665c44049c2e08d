#!/usr/bin/env bash
# Build the minimal voidbox guest kernel from Debian's linux-source-6.1.
#
#   bash guest/build-kernel.sh <outdir>
#
# `make tinyconfig` + guest/kernel.config (merged with scripts/kconfig/merge_config.sh),
# `make -j$(nproc) vmlinux` (~5 min on 2 cores). Output in <outdir>:
#   vmlinux          ELF kernel, booted by QEMU through its PVH entry point
#   kernel-version   its release string (uname -r)
#   config           the resolved .config
#   microvm-options  extra `-M microvm,` options this kernel needs (acpi=off: no ACPI,
#                    QEMU passes the virtio-mmio devices on the command line)
#   stamp            hash of the inputs; the (slow) build is skipped when it matches
# Installs the build dependencies with apt-get when missing (as root; else says which).
# Exit status non-zero on any failure: guest/build.sh then falls back to the cloud kernel.
set -euo pipefail

OUT=${1:?usage: build-kernel.sh <outdir>}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$HERE/kernel.config
SRC_PKG=linux-source-6.1
log() { echo "guest/build-kernel.sh: $*" >&2; }

# --- build dependencies ----------------------------------------------------------------
DEPS="$SRC_PKG build-essential bc bison flex libelf-dev libssl-dev xz-utils"
missing=""
for p in $DEPS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq $missing >/dev/null 2>&1; } \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null; } \
      || { log "apt-get install$missing failed"; exit 1; }
  else
    log "missing packages:$missing (install with: sudo apt-get install -y$missing)"
    exit 1
  fi
fi
TARBALL=$(ls -1 /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n 1 || true)
[ -n "$TARBALL" ] || { log "no /usr/src/linux-source-6.1.tar.* (package $SRC_PKG)"; exit 1; }
SRC_VER=$(dpkg-query -W -f='${Version}' "$SRC_PKG")
JOBS=$(nproc 2>/dev/null || echo 2)

STAMP=$( {
  echo "source=$SRC_PKG $SRC_VER"
  echo "cc=$(gcc --version | head -n 1)"
  cat "$FRAGMENT" "$HERE/build-kernel.sh"
} | sha256sum | cut -d' ' -f1)

if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] \
   && [ -f "$OUT/vmlinux" ] && [ -s "$OUT/kernel-version" ] && [ -f "$OUT/microvm-options" ]; then
  log "custom kernel up to date ($OUT, $(cat "$OUT/kernel-version"))"
  exit 0
fi

# A build that failed with the same inputs is not retried (it takes minutes): the
# caller falls back to the cloud kernel. Delete the .failed file to retry.
FAILED=$OUT.failed
if [ -f "$FAILED" ] && [ "$(cat "$FAILED")" = "$STAMP" ]; then
  log "a build with these inputs failed before (see $FAILED.log); delete $FAILED to retry"
  exit 1
fi

# --- build -----------------------------------------------------------------------------
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vbx-kernel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)
log "building the guest kernel from $SRC_PKG $SRC_VER with make -j$JOBS (a few minutes; cached afterwards)"
tar -xf "$TARBALL" -C "$WORK"
K=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n 1)
(
  cd "$K"
  make -s tinyconfig >/dev/null
  scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" >/dev/null
  make -s olddefconfig >/dev/null
  # Every option of the fragment must have survived olddefconfig (dependencies).
  bad=0
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qxF "$line" .config || { echo "guest/build-kernel.sh: option not applied: $line" >&2; bad=1; } ;;
      "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; ! grep -q "^$sym=" .config || { echo "guest/build-kernel.sh: option not unset: $sym" >&2; bad=1; } ;;
    esac
  done < "$FRAGMENT"
  [ $bad = 0 ]
  if ! make -j"$JOBS" -s KBUILD_BUILD_USER=voidbox KBUILD_BUILD_HOST=voidbox vmlinux >"$WORK/make.log" 2>&1; then
    tail -n 40 "$WORK/make.log" >&2
    cp "$WORK/make.log" "$FAILED.log" 2>/dev/null || true
    echo "$STAMP" > "$FAILED"
    exit 1
  fi
  make -s kernelrelease > "$WORK/kernel-version"
  cp .config "$WORK/config"
  cp vmlinux "$WORK/vmlinux.out"
)
[ "$(head -c 4 "$WORK/vmlinux.out" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || { log "vmlinux is not an ELF file"; exit 1; }
rm -f "$OUT/stamp"
mv -f "$WORK/vmlinux.out" "$OUT/vmlinux"
mv -f "$WORK/config" "$OUT/config"
mv -f "$WORK/kernel-version" "$OUT/kernel-version"
echo "acpi=off" > "$OUT/microvm-options"
echo "$STAMP" > "$OUT/stamp"
rm -f "$FAILED" "$FAILED.log"
log "custom kernel $(cat "$OUT/kernel-version") built in $(( $(date +%s) - t0 )) s ($(stat -c %s "$OUT/vmlinux") bytes)"
