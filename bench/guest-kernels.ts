/**
 * What benchmarks (and the image tests) compare the daemon's guest against: every kernel
 * build/guest offers, and the stock, untuned kernel command line.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { guestInitramfs, kernelIn, type GuestImage } from "../src/sandbox/qemu/guest-image.js";
import { hostTscKhz } from "../src/sandbox/qemu/kernel-args.js";

/**
 * Every kernel the guest image offers (for benchmarks): the custom kernel, the Debian
 * cloud kernel booted through PVH (`vmlinux`) and its stock bzImage (`vmlinuz`).
 */
export function findGuestKernels(projectRoot: string): {
  custom: GuestImage | null;
  cloud: GuestImage | null;
  cloudBzImage: GuestImage | null;
} {
  const dir = path.join(projectRoot, "build", "guest");
  const initramfs = guestInitramfs(dir);
  const none = { custom: null, cloud: null, cloudBzImage: null };
  if (!initramfs) return none;
  const img = (k: { kernel: string; kernelVersion: string } | null) => (k ? { ...k, initramfs } : null);
  // Older images had the cloud kernel at the top level (no cloud/ directory).
  const cloudDir = existsSync(path.join(dir, "cloud")) ? path.join(dir, "cloud") : dir;
  return {
    custom: img(kernelIn(path.join(dir, "custom"), ["vmlinux"])),
    cloud: img(kernelIn(cloudDir)),
    cloudBzImage: img(kernelIn(cloudDir, ["vmlinuz"])),
  };
}

/** The stock minimal command line (what the protocol strictly needs), for comparison. */
export const UNTUNED_KERNEL_ARGS = ["console=ttyS0"];

/**
 * UNTUNED_KERNEL_ARGS plus `tsc_early_khz=` when known: without it a TCG guest hangs
 * in TSC calibration often enough (most boots on a loaded host) that no baseline
 * could be measured.
 */
export function untunedKernelArgs(): string[] {
  const khz = hostTscKhz();
  return khz ? [...UNTUNED_KERNEL_ARGS, `tsc_early_khz=${khz}`] : [...UNTUNED_KERNEL_ARGS];
}
