/** VmSnapshots' bookkeeping without QEMU: what a shape is, which files count, refusal. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { VmSnapshots, type SnapshotShape } from "../../src/sandbox/qemu/snapshots.js";

let dir = "";
let shape: SnapshotShape;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "vbx-snaps-"));
  writeFileSync(path.join(dir, "vmlinux"), "kernel");
  writeFileSync(path.join(dir, "initramfs"), "initramfs");
  shape = { qemuBinary: "/bin/true", kernel: path.join(dir, "vmlinux"), initramfs: path.join(dir, "initramfs"), kernelArgs: ["quiet"], machineOptions: "", memoryMb: 256, vcpus: 1, accelerator: "tcg" };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("VmSnapshots", () => {
  it("a shape is its settings and its files' identities: any change is another snapshot", () => {
    const s = new VmSnapshots(path.join(dir, "snaps"), 4);
    const k = s.key(shape);
    expect(s.key({ ...shape })).toBe(k);
    expect(s.key({ ...shape, memoryMb: 512 })).not.toBe(k);
    expect(s.key({ ...shape, kernelArgs: ["quiet", "x"] })).not.toBe(k);
    expect(s.key({ ...shape, accelerator: "kvm" })).not.toBe(k);
    // A rebuilt initramfs (same path, new content) is a new shape.
    writeFileSync(shape.initramfs, "initramfs, rebuilt");
    expect(s.key(shape)).not.toBe(k);
  });

  it("finds a published snapshot, wants one only when there is none, and forgets a refused one", () => {
    const snapDir = path.join(dir, "snaps");
    const s = new VmSnapshots(snapDir, 4);
    const k = s.key(shape);
    expect(s.find(k)).toBeNull();
    expect(s.wanted(k)).toBe(true);
    mkdirSync(snapDir);
    writeFileSync(path.join(snapDir, `${k}.vmstate`), "state");
    expect(s.find(k)).toBe(path.join(snapDir, `${k}.vmstate`));
    expect(s.wanted(k)).toBe(false);
    s.refuse(k, "test");
    expect(s.find(k)).toBeNull();
    expect(s.wanted(k)).toBe(false);
  });

  it("with keep 0 it never restores nor snapshots", () => {
    const snapDir = path.join(dir, "snaps");
    mkdirSync(snapDir);
    const s = new VmSnapshots(snapDir, 0);
    const k = s.key(shape);
    writeFileSync(path.join(snapDir, `${k}.vmstate`), "state");
    expect(s.find(k)).toBeNull();
    expect(s.wanted(k)).toBe(false);
  });

  it("taking a snapshot from a QMP socket that is not there fails quietly and refuses the shape", async () => {
    const snapDir = path.join(dir, "snaps");
    const s = new VmSnapshots(snapDir, 4);
    const k = s.key(shape);
    await s.take(k, path.join(dir, "no-such.sock"));
    expect(s.find(k)).toBeNull();
    expect(s.wanted(k)).toBe(false);
  });

  it("restoring from a snapshot marks it most recently used (pruning keeps those)", () => {
    const snapDir = path.join(dir, "snaps");
    mkdirSync(snapDir);
    const s = new VmSnapshots(snapDir, 4);
    const f = (n: string) => path.join(snapDir, `${n}.vmstate`);
    for (const [i, n] of ["a", "b", "c"].entries()) {
      writeFileSync(f(n), n);
      utimesSync(f(n), new Date(1000 * (i + 1)), new Date(1000 * (i + 1)));
    }
    expect(s.find("a")).toBe(f("a"));
    // find() made "a" the most recently used.
    expect(statSync(f("a")).mtimeMs).toBeGreaterThan(statSync(f("c")).mtimeMs);
  });
});
