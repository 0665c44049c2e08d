/** The guest image `make guest` built (guest/build.sh): which kernel and initramfs to boot. */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

export interface GuestImage {
  kernel: string;
  initramfs: string;
  kernelVersion: string;
}

/** A kernel in `dir`: the uncompressed `vmlinux` (PVH boot, faster under TCG) or else `vmlinuz`. */
export function kernelIn(dir: string, names = ["vmlinux", "vmlinuz"]): { kernel: string; kernelVersion: string } | null {
  const kernel = names.map((n) => path.join(dir, n)).find((p) => existsSync(p));
  if (!kernel) return null;
  try {
    const kernelVersion = readFileSync(path.join(dir, "kernel-version"), "utf8").trim();
    return kernelVersion ? { kernel, kernelVersion } : null;
  } catch {
    return null;
  }
}

export function guestInitramfs(dir: string): string | undefined {
  return ["initramfs.cpio.lz4", "initramfs.cpio.gz"].map((n) => path.join(dir, n)).find((p) => existsSync(p));
}

/**
 * The guest image built by `guest/build.sh` in `<projectRoot>/build/guest`, or null.
 * Picks the best kernel available: the minimal custom kernel (`custom/`, boots in
 * well under a second under TCG), else the one build.sh chose (top level), else the
 * Debian cloud kernel (`cloud/`). Prefers the uncompressed `vmlinux` over `vmlinuz`.
 */
export function findGuestImage(projectRoot: string): GuestImage | null {
  const dir = path.join(projectRoot, "build", "guest");
  const initramfs = guestInitramfs(dir);
  if (!initramfs) return null;
  for (const sub of ["custom", ".", "cloud"]) {
    const k = kernelIn(path.join(dir, sub));
    if (k) return { ...k, initramfs };
  }
  return null;
}
