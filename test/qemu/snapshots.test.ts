/**
 * Fresh micro-VMs from RAM snapshots (src/sandbox/qemu/snapshots.ts), real QEMU: the
 * first boot of a shape takes its snapshot, later VMs of the shape are restored from it
 * and reseeded from the host before use, and a snapshot that cannot be restored is
 * refused (the VM boots instead). Skipped, with the reason, without QEMU or the image.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Accelerator, StageVm } from "../../src/sandbox/types.js";
import { QemuSandbox, VmSnapshots, findGuestImage, killLeftoverVms, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../helpers/accelerator.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const image = findGuestImage(root);
const skipReason = !qemuAvailable() ? "qemu-system-x86_64 not on PATH" : !image ? "no guest image (run: make guest)" : null;
if (skipReason) console.warn(`[test/qemu/snapshots] skipped: ${skipReason}`);

const T = 90_000;
/** The guests' clock in these tests: far from the host's, so only a reseed can explain it. */
const GUEST_NOW = Date.UTC(2031, 4, 6, 7, 8, 9);

describe.skipIf(skipReason !== null)("fresh VMs from snapshots (real micro-VM)", () => {
  let dir = "";
  let accelerator: Accelerator;
  const opened: StageVm[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "vbx-snap-test-"));
    accelerator = await probeAccelerator({ kernel: image!.kernel, initramfs: image!.initramfs, deadlineMs: 4000 });
  }, T);
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((vm) => vm.stop(1000)));
    await killLeftoverVms(path.join(dir, "vms"));
  }, T);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function sandbox(snapDir: string): { sb: QemuSandbox; snaps: VmSnapshots } {
    const snaps = new VmSnapshots(snapDir, 2);
    const sb = new QemuSandbox({ kernel: image!.kernel, initramfs: image!.initramfs, accelerator, pidDir: path.join(dir, "vms"), snapshots: snaps, now: () => GUEST_NOW });
    return { sb, snaps };
  }
  async function open(sb: QemuSandbox, attempt: number): Promise<StageVm> {
    const vm = await sb.open({ runId: "snap", stage: "s", attempt, memoryMb: 256, vcpus: 1, network: false, signal: AbortSignal.timeout(60_000) });
    opened.push(vm);
    return vm;
  }
  async function sh(vm: StageVm, script: string): Promise<string> {
    const r = await vm.exec({ program: "sh", args: ["-c", script], env: {}, stdin: Buffer.alloc(0), signal: AbortSignal.timeout(20_000) });
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    return r.stdout.toString().trim();
  }
  const snapshotFiles = (d: string) => (existsSync(d) ? readdirSync(d).filter((n) => n.endsWith(".vmstate")) : []);

  it(
    "the first boot of a shape takes its snapshot; later VMs are restored from it, each reseeded with the host's clock and entropy",
    async () => {
      const snapDir = path.join(dir, "a");
      const { sb } = sandbox(snapDir);
      const first = await open(sb, 1);
      expect(first.vm?.restored).toBe(false);
      expect(snapshotFiles(snapDir)).toHaveLength(1);
      // The VM that was snapshotted goes on serving its stage.
      expect(await sh(first, "echo still here")).toBe("still here");

      const a = await open(sb, 2);
      const b = await open(sb, 3);
      expect([a.vm?.restored, b.vm?.restored]).toEqual([true, true]);
      // Each restore was set to the host's clock (here: GUEST_NOW) before its first command.
      const year = String(new Date(GUEST_NOW).getUTCFullYear());
      for (const vm of [first, a, b]) expect(await sh(vm, "date -u +%Y")).toBe(year);
      // Two guests restored from one snapshot draw different random bytes (and a file written in one is not in the other).
      const [ra, rb] = await Promise.all([a, b].map((vm) => sh(vm, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo mine > /tmp/own")));
      expect(ra).toMatch(/^[0-9a-f]{32}$/);
      expect(ra).not.toBe(rb);
      expect(await sh(b, "cat /tmp/own")).toBe("mine");
    },
    T,
  );

  it(
    "a snapshot QEMU cannot restore is refused: the VM boots instead and the shape is not restored again",
    async () => {
      const snapDir = path.join(dir, "b");
      const { sb, snaps } = sandbox(snapDir);
      await open(sb, 1);
      const [file] = snapshotFiles(snapDir);
      expect(file).toBeDefined();
      writeFileSync(path.join(snapDir, file), "not a QEMU migration stream\n");
      const vm = await open(sb, 2);
      expect(vm.vm?.restored).toBe(false);
      expect(await sh(vm, "echo booted")).toBe("booted");
      expect(snapshotFiles(snapDir)).toEqual([]);
      // Refused for this process: no new snapshot is taken, the next VM boots too.
      const key = file.replace(/\.vmstate$/, "");
      expect(snaps.wanted(key)).toBe(false);
      const next = await open(sb, 3);
      expect(next.vm?.restored).toBe(false);
      expect(snapshotFiles(snapDir)).toEqual([]);
    },
    T,
  );
});
