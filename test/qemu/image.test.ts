/** findGuestImage / findGuestKernels on fake build/guest layouts (no QEMU needed). */
import { describe, it, expect, afterEach } from "vitest";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { findGuestImage, TCG_KERNEL_ARGS, tunedKernelArgs } from "../../src/sandbox/qemu/index.js";
import { findGuestKernels } from "../../bench/guest-kernels.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A project root whose build/guest holds `files` (path -> content). */
function layout(files: Record<string, string>): { root: string; g: string } {
  const root = mkdtempSync(path.join(os.tmpdir(), "vbx-image-"));
  dirs.push(root);
  const g = path.join(root, "build", "guest");
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(g, rel)), { recursive: true });
    writeFileSync(path.join(g, rel), content);
  }
  return { root, g };
}

describe("guest image discovery", () => {
  it("prefers the custom kernel over the cloud kernel", () => {
    const { root, g } = layout({
      "initramfs.cpio.lz4": "i",
      "vmlinux": "k",
      "kernel-version": "6.1.192-voidbox\n",
      "custom/vmlinux": "k",
      "custom/kernel-version": "6.1.192-voidbox\n",
      "cloud/vmlinux": "c",
      "cloud/vmlinuz": "z",
      "cloud/kernel-version": "6.1.0-56-cloud-amd64\n",
    });
    expect(findGuestImage(root)).toEqual({
      kernel: path.join(g, "custom/vmlinux"),
      initramfs: path.join(g, "initramfs.cpio.lz4"),
      kernelVersion: "6.1.192-voidbox",
    });
    const k = findGuestKernels(root);
    expect(k.custom?.kernelVersion).toBe("6.1.192-voidbox");
    expect(k.cloud?.kernel).toBe(path.join(g, "cloud/vmlinux"));
    expect(k.cloudBzImage?.kernel).toBe(path.join(g, "cloud/vmlinuz"));
    expect(k.cloud?.kernelVersion).toBe("6.1.0-56-cloud-amd64");
  });

  it("falls back to the cloud kernel when no custom kernel was built", () => {
    const { root, g } = layout({
      "initramfs.cpio.lz4": "i",
      "vmlinux": "c",
      "vmlinuz": "z",
      "kernel-version": "6.1.0-56-cloud-amd64\n",
      "cloud/vmlinux": "c",
      "cloud/vmlinuz": "z",
      "cloud/kernel-version": "6.1.0-56-cloud-amd64\n",
    });
    expect(findGuestImage(root)?.kernel).toBe(path.join(g, "vmlinux"));
    expect(findGuestImage(root)?.kernelVersion).toBe("6.1.0-56-cloud-amd64");
    expect(findGuestKernels(root).custom).toBeNull();
  });

  it("reads the older layout (cloud kernel at the top level, bzImage only)", () => {
    const { root, g } = layout({ "initramfs.cpio.lz4": "i", "vmlinuz": "z", "kernel-version": "6.1.0-56-cloud-amd64\n" });
    expect(findGuestImage(root)?.kernel).toBe(path.join(g, "vmlinuz"));
    expect(findGuestKernels(root).cloudBzImage?.kernel).toBe(path.join(g, "vmlinuz"));
  });

  it("ignores a kernel without its kernel-version and an image without initramfs", () => {
    expect(findGuestImage(layout({ "initramfs.cpio.lz4": "i", "custom/vmlinux": "k" }).root)).toBeNull();
    expect(findGuestImage(layout({ "vmlinux": "k", "kernel-version": "x\n" }).root)).toBeNull();
  });
});

describe("tuned kernel arguments", () => {
  it("adds the TCG-only arguments for the minimal kernel on one vCPU, never for the Debian cloud kernel", () => {
    const { g } = layout({ "custom/vmlinux": "k", "custom/microvm-options": "acpi=off\n", "cloud/vmlinux": "c" });
    const has = (args: string[]) => TCG_KERNEL_ARGS.every((a) => args.includes(a));
    expect(has(tunedKernelArgs("tcg", 1, path.join(g, "custom/vmlinux")))).toBe(true);
    expect(has(tunedKernelArgs("tcg", 2, path.join(g, "custom/vmlinux")))).toBe(false);
    expect(has(tunedKernelArgs("kvm", 1, path.join(g, "custom/vmlinux")))).toBe(false);
    expect(has(tunedKernelArgs("tcg", 1, path.join(g, "cloud/vmlinux")))).toBe(false);
  });
});
