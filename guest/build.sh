#!/usr/bin/env bash
# Build the voidbox guest image from Debian packages only.
#
#   bash guest/build.sh build/guest
#
# Output (in the given directory):
#   vmlinux, kernel-version   the kernel the guest boots: the minimal custom kernel when it
#                             built (custom/), else the Debian cloud kernel (cloud/)
#   vmlinuz                   the cloud kernel's bzImage (only when the cloud kernel is used)
#   custom/                   minimal kernel from linux-source-6.1 (guest/kernel.sh runs
#                             guest/build-kernel.sh with guest/kernel.config; cached by its
#                             own stamp)
#   cloud/                    the newest Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64):
#                             vmlinuz, vmlinux (extracted), kernel-version — the fallback
#   initramfs.cpio.lz4        busybox-static + guest/init + the cloud kernel's virtio modules
#                             (under lib/modules/<version>/; unused by the custom kernel)
#   stamp                     hash of the inputs; a rebuild is skipped when it matches
#
# VOIDBOX_GUEST_KERNEL picks what happens when the custom kernel is not built yet (it
# takes ~5 minutes on 2 cores, once):
#   auto (default)  use the cloud kernel now and build the custom one in the background
#                   (nice'd; `make kernel` shows its progress and waits); the next image
#                   build (`make guest`, `make run`) switches to it
#   custom          build it now, with progress; fail if it does not build (make kernel, make test)
#   cloud           cloud kernel only
set -euo pipefail

OUT=${1:-build/guest}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "guest/build.sh: $*" >&2; exit 1; }
need_pkgs() {
  echo "guest/build.sh: missing: $1" >&2
  echo "guest/build.sh: install with: apt-get install -y qemu-system-x86 busybox-static linux-image-cloud-amd64 cpio lz4 gcc libc6-dev" >&2
  exit 1
}

# --- inputs --------------------------------------------------------------------
KERNEL=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$KERNEL" ] || need_pkgs "kernel /boot/vmlinuz-*-cloud-amd64 (package linux-image-cloud-amd64)"
[ -r "$KERNEL" ] || die "cannot read $KERNEL (run as root or make it readable)"
KVER=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -d "$MODDIR" ] || need_pkgs "kernel modules $MODDIR (package linux-image-$KVER)"

BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do
  if [ -x "$b" ]; then BUSYBOX=$b; break; fi
done
[ -n "$BUSYBOX" ] || need_pkgs "busybox (package busybox-static)"
# A dynamically linked busybox (package 'busybox') would not run in the initramfs.
if command -v ldd >/dev/null 2>&1 && ldd "$BUSYBOX" 2>&1 | grep -q '=>'; then
  need_pkgs "a static busybox ($BUSYBOX is dynamically linked; package busybox-static)"
fi
BBVER=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || "$BUSYBOX" 2>&1 | head -n 1)
command -v cpio >/dev/null 2>&1 || need_pkgs "cpio"
# The guest agent (vbx-agent.c) is compiled here, statically.
command -v gcc >/dev/null 2>&1 || need_pkgs "gcc (packages gcc libc6-dev)"
[ -n "$(gcc -print-file-name=libc.a 2>/dev/null | grep /)" ] || need_pkgs "a static C library (package libc6-dev)"
CCVER=$(gcc --version | head -n 1)
command -v lz4 >/dev/null 2>&1 || need_pkgs "lz4"
grep -q '^CONFIG_RD_LZ4=y' "/boot/config-$KVER" 2>/dev/null || die "kernel $KVER lacks CONFIG_RD_LZ4"

# Modules the guest may load, in load order (dependencies first). virtio_console carries
# the host<->guest channel; the net ones are loaded only when the VM has a network, the
# block and filesystem ones only with a guest image. (The cloud kernel has no 9p: mounts
# need the minimal kernel.)
MODULES="virtio_ring virtio virtio_mmio virtio_console failover net_failover virtio_net virtio_blk libcrc32c erofs overlay"

# The custom kernel has its own stamp (its build takes minutes): a no-op when cached.
KERNEL_DEPS="linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils"
CUSTOM_OK=0
PENDING=""
mkdir -p "$OUT"
case "${VOIDBOX_GUEST_KERNEL:-auto}" in
  custom)
    if bash "$HERE/kernel.sh" "$OUT/custom"; then CUSTOM_OK=1
    else
      echo "guest/build.sh: the minimal guest kernel did not build (log above; $OUT/custom.failed.log)." >&2
      echo "guest/build.sh: VOIDBOX_GUEST_KERNEL=cloud uses the Debian cloud kernel instead." >&2
      exit 1
    fi ;;
  cloud) rm -rf "$OUT/custom" ;;
  auto)
    if bash "$HERE/kernel.sh" "$OUT/custom" --check; then CUSTOM_OK=1
    else
      status=$(bash "$HERE/kernel.sh" "$OUT/custom" --status)
      missing=""
      for p in $KERNEL_DEPS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
      if [ "$status" = building ]; then
        PENDING="the minimal kernel is still building in the background ($OUT/custom.log; \`make kernel\` waits for it)"
      elif [ "$status" = failed ]; then
        echo "guest/build.sh: warning: the minimal guest kernel failed to build before ($OUT/custom.failed.log); delete $OUT/custom.failed to retry" >&2
      elif [ -n "$missing" ] && [ "$(id -u)" != 0 ]; then
        PENDING="the minimal kernel needs:$missing (sudo apt-get install -y$missing; then \`make kernel\`)"
      else
        rm -rf "$OUT/custom" # stale: never boot it while its successor builds
        bash "$HERE/kernel.sh" "$OUT/custom" --background >&2
        PENDING="the minimal kernel is building in the background ($OUT/custom.log; \`make kernel\` shows its progress and waits; the next \`make run\` uses it)"
      fi
    fi ;;
  *) die "VOIDBOX_GUEST_KERNEL must be auto, custom or cloud" ;;
esac

STAMP=$( {
  echo "kernel=$KVER"
  echo "custom=$CUSTOM_OK $(cat "$OUT/custom/stamp" 2>/dev/null || true)"
  echo "busybox=$BBVER"
  echo "cc=$CCVER"
  echo "modules=$MODULES"
  for f in "$HERE"/*; do [ -f "$f" ] && { echo "file=$(basename "$f")"; cat "$f"; }; done
} | sha256sum | cut -d' ' -f1)

if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] \
   && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.lz4" ]; then
  echo "guest image up to date ($OUT, kernel $(cat "$OUT/kernel-version"))"
  [ -z "$PENDING" ] || echo "guest/build.sh: micro-VMs boot the Debian cloud kernel for now: $PENDING"
  exit 0
fi

# --- build ---------------------------------------------------------------------
mkdir -p "$OUT" "$OUT/cloud"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,workspace,root,lib/modules/$KVER,etc}
cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"
done
cp "$HERE/init" "$R/init"
chmod 0755 "$R/init"
gcc -static -O2 -s -Wall -o "$R/bin/vbx-agent" "$HERE/vbx-agent.c" || die "cannot compile guest/vbx-agent.c"
# The kernel opens /dev/console before /init runs; devtmpfs is mounted by init itself.
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || echo "guest/build.sh: warning: cannot mknod /dev/console (not root?)" >&2
mknod -m 666 "$R/dev/null" c 1 3 2>/dev/null || true

for m in $MODULES; do
  src=$(find "$MODDIR" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)
  [ -n "$src" ] || die "module $m not found under $MODDIR"
  case "$src" in
    *.ko.xz)  xz -dc "$src" > "$R/lib/modules/$KVER/$m.ko" ;;
    *.ko.zst) command -v zstd >/dev/null || need_pkgs "zstd (to decompress $src)"; zstd -dc "$src" > "$R/lib/modules/$KVER/$m.ko" ;;
    *.ko.gz)  gzip -dc "$src" > "$R/lib/modules/$KVER/$m.ko" ;;
    *)        cp "$src" "$R/lib/modules/$KVER/$m.ko" ;;
  esac
done

( cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet ) \
  | lz4 -l -9 -q -f - "$OUT/initramfs.cpio.lz4.tmp"
mv -f "$OUT/initramfs.cpio.lz4.tmp" "$OUT/initramfs.cpio.lz4"
cp -f "$KERNEL" "$OUT/cloud/vmlinuz"
# Also extract the uncompressed ELF vmlinux: QEMU boots it directly through its PVH
# entry point, which skips the in-guest bzImage decompression (~1 s under TCG).
rm -f "$OUT/cloud/vmlinux"
extract_vmlinux() { # magic-regex decompressor...
  local magic=$1; shift
  local off
  for off in $(LC_ALL=C grep -obUaP "$magic" "$KERNEL" | cut -d: -f1 | head -n 5); do
    tail -c "+$((off + 1))" "$KERNEL" | "$@" > "$STAGE/vmlinux" 2>/dev/null || true
    if [ "$(head -c 4 "$STAGE/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      return 0
    fi
  done
  return 1
}
if extract_vmlinux '\x02\x21\x4c\x18' lz4 -dc \
   || extract_vmlinux '\x28\xb5\x2f\xfd' zstd -dcq \
   || extract_vmlinux '\xfd\x37\x7a\x58\x5a\x00' xz -dcq \
   || extract_vmlinux '\x1f\x8b\x08' gzip -dcq; then
  mv -f "$STAGE/vmlinux" "$OUT/cloud/vmlinux"
else
  echo "guest/build.sh: warning: could not extract vmlinux from $KERNEL; the guest boots the slower bzImage" >&2
fi
echo "$KVER" > "$OUT/cloud/kernel-version"

# The kernel the guest boots: the custom one when it built, else the cloud one.
rm -f "$OUT/vmlinux" "$OUT/vmlinuz"
if [ $CUSTOM_OK = 1 ]; then
  BEST=$OUT/custom
  ln "$BEST/vmlinux" "$OUT/vmlinux" 2>/dev/null || cp -f "$BEST/vmlinux" "$OUT/vmlinux"
  how="custom kernel $(cat "$BEST/kernel-version"); cloud kernel $KVER kept as fallback in $OUT/cloud"
else
  BEST=$OUT/cloud
  [ -f "$BEST/vmlinux" ] && { ln "$BEST/vmlinux" "$OUT/vmlinux" 2>/dev/null || cp -f "$BEST/vmlinux" "$OUT/vmlinux"; }
  ln "$BEST/vmlinuz" "$OUT/vmlinuz" 2>/dev/null || cp -f "$BEST/vmlinuz" "$OUT/vmlinuz"
  how="Debian cloud kernel $KVER (no custom kernel${PENDING:+; $PENDING})"
fi
cp -f "$BEST/kernel-version" "$OUT/kernel-version"
if [ -f "$BEST/microvm-options" ]; then cp -f "$BEST/microvm-options" "$OUT/microvm-options"; else rm -f "$OUT/microvm-options"; fi
echo "$STAMP" > "$OUT/stamp"
echo "guest image built in $OUT: $how, initramfs $(stat -c %s "$OUT/initramfs.cpio.lz4") bytes"
