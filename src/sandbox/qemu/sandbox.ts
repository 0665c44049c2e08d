/**
 * QemuSandbox: every stage attempt runs in a fresh QEMU micro-VM (`-M microvm`): booted
 * from the guest image built by guest/build.sh, or restored from a snapshot of its shape
 * (snapshots.ts), then seeded from the host. The host talks to the guest agent over a
 * virtio-serial port (see protocol.ts); stage-vm.ts drives the commands.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { SandboxError, type Accelerator, type Logger, type Sandbox, type StageVm, type StageVmOptions, type VmInfo } from "../types.js";
import { microvmOptionsFor, tunedKernelArgs } from "./kernel-args.js";
import { egressArgs } from "./network.js";
import { withQemuMessage } from "./probe.js";
import type { SnapshotShape, VmSnapshots } from "./snapshots.js";
import { QemuStageVm } from "./stage-vm.js";
import { QemuVm, type VmSpawnOptions } from "./vm.js";

export interface QemuSandboxOptions {
  kernel: string;
  initramfs: string;
  accelerator: Accelerator;
  /** Directory holding one pid file per live VM (for killLeftoverVms after a crash). */
  pidDir: string;
  /** Boot → ready-marker deadline; default 60 s (TCG boots take 2–4 s, more under load). */
  bootTimeoutMs?: number;
  log?: Logger;
  /** Kernel command line words; default tunedKernelArgs(accelerator, vcpus, kernel). */
  kernelArgs?: string[];
  qemuBinary?: string;
  /** Spawn QEMU so that it dies with the daemon (setpriv --pdeathsig KILL). */
  dieWithParent?: boolean;
  /** The clock fresh guests are set to (SEED); default Date.now. */
  now?: () => number;
  /** RAM snapshots fresh VMs start from where their shape allows (snapshots.ts); absent: always boot. */
  snapshots?: VmSnapshots;
  /** Told about every boot that failed (not about aborted ones): health lists recent ones. */
  onBootFailure?: (f: { runId: string; stage: string; attempt: number; reason: string }) => void;
}

/** After the guest channel closes during boot, how long QEMU's exit may take to be seen. */
const CHANNEL_EXIT_GRACE_MS = 1000;
/** Niceness of a warm-pool boot: it takes CPU only when running stages leave some. */
const BACKGROUND_NICE = 10;
/** Bound on a restore from a snapshot: past it the shape boots cold instead. */
const RESTORE_TIMEOUT_MS = 20_000;
/** Random bytes a fresh guest is seeded with (credited in full: they come from the host's CSPRNG). */
const SEED_BYTES = 64;

export class QemuSandbox implements Sandbox {
  readonly kind = "qemu" as const;
  constructor(private readonly opts: QemuSandboxOptions) {}

  async open(o: StageVmOptions): Promise<StageVm> {
    if (o.signal.aborted) throw new SandboxError("micro-VM boot aborted before start");
    const kernel = o.kernel ?? this.opts.kernel;
    const initramfs = o.initramfs ?? this.opts.initramfs;
    for (const [what, p] of [["kernel", kernel], ["initramfs", initramfs]] as const) {
      if (!existsSync(p)) throw new SandboxError(`guest ${what} not found: ${p} (run: make guest)`);
    }
    const t0 = Date.now();
    // An egress network replaces sandbox.network: the guest reaches that endpoint only.
    const egress = o.egress ? egressArgs(o.egress) : undefined;
    const spawnOpts: VmSpawnOptions = {
      kernel,
      initramfs,
      accelerator: this.opts.accelerator,
      memoryMb: o.memoryMb,
      vcpus: o.vcpus,
      network: o.network && !egress,
      storage: o.storage,
      kernelArgs: [...(this.opts.kernelArgs ?? tunedKernelArgs(this.opts.accelerator, o.vcpus, kernel)), ...(egress?.kernel ?? [])],
      extraArgs: egress?.qemu,
      runId: o.runId,
      stage: o.stage,
      attempt: o.attempt,
      pidDir: this.opts.pidDir,
      qemuBinary: this.opts.qemuBinary,
      dieWithParent: this.opts.dieWithParent,
      nice: o.background ? BACKGROUND_NICE : undefined,
      log: this.opts.log,
    };
    const snaps = this.opts.snapshots;
    // Disks and a network carry host state a restore cannot reproduce: those shapes always boot.
    const key = snaps && !o.network && !egress && !o.storage?.image && !o.storage?.mounts.length ? snaps.key(snapshotShape(spawnOpts)) : null;
    const from = key ? snaps!.find(key) : null;
    if (from) {
      const vm = await this.restore(o, spawnOpts, from, key!, t0);
      if (vm) return vm;
    }
    return this.boot(o, spawnOpts, key && snaps!.wanted(key) ? key : null, t0);
  }

  private async spawn(o: StageVmOptions, spawnOpts: VmSpawnOptions): Promise<QemuVm> {
    try {
      return await QemuVm.spawn(spawnOpts);
    } catch (e) {
      const reason = `cannot start micro-VM: ${(e as Error).message}`;
      this.opts.onBootFailure?.({ runId: o.runId, stage: o.stage, attempt: o.attempt, reason });
      throw new SandboxError(reason);
    }
  }

  /** A fresh VM from the shape's snapshot, reseeded; null when the restore failed (the snapshot is then refused). */
  private async restore(o: StageVmOptions, spawnOpts: VmSpawnOptions, from: string, key: string, t0: number): Promise<StageVm | null> {
    const vm = await this.spawn(o, { ...spawnOpts, restoreFrom: from });
    const ready = await seedGuest(vm, this.opts.now?.() ?? Date.now(), Math.min(this.opts.bootTimeoutMs ?? 60_000, RESTORE_TIMEOUT_MS), o.signal);
    if (ready.ok) return this.ready(o, vm, ready.kernelVersion, t0, true);
    await vm.stop(0);
    if (o.signal.aborted) throw new SandboxError("micro-VM boot failed: boot aborted");
    await vm.waitOutput(1000);
    this.opts.snapshots!.refuse(key, withQemuMessage(ready.reason, vm.consoleText(500)));
    return null;
  }

  /** A fresh VM by booting the kernel; with `snapshotKey`, its idle state becomes the shape's snapshot. */
  private async boot(o: StageVmOptions, spawnOpts: VmSpawnOptions, snapshotKey: string | null, t0: number): Promise<StageVm> {
    const bootTimeoutMs = this.opts.bootTimeoutMs ?? 60_000;
    const vm = await this.spawn(o, { ...spawnOpts, qmp: snapshotKey !== null });
    let ready = await waitReady(vm, bootTimeoutMs, o.signal);
    let seeded = false;
    if (ready.ok) {
      const kernelVersion = ready.kernelVersion;
      ready = await seedGuest(vm, this.opts.now?.() ?? Date.now(), bootTimeoutMs, o.signal);
      seeded = ready.ok;
      // A guest init older than SEED boots as before, it just cannot be snapshotted.
      if (!ready.ok && / unknown frame type SEED/.test(ready.reason)) ready = { ok: true, kernelVersion };
    }
    if (!ready.ok) {
      await vm.stop(0);
      await vm.waitOutput(1000);
      const tail = vm.consoleText(1500);
      this.opts.log?.warn({ runId: o.runId, stage: o.stage, reason: ready.reason }, "micro-VM boot failed");
      if (!o.signal.aborted) {
        this.opts.onBootFailure?.({ runId: o.runId, stage: o.stage, attempt: o.attempt, reason: withQemuMessage(ready.reason, tail) });
      }
      throw new SandboxError(`micro-VM boot failed: ${ready.reason}${tail ? `; console: ${tail}` : ""}`);
    }
    if (snapshotKey && seeded && vm.qmpPath) await this.opts.snapshots!.take(snapshotKey, vm.qmpPath);
    return this.ready(o, vm, ready.kernelVersion, t0, false);
  }

  private ready(o: StageVmOptions, vm: QemuVm, kernelVersion: string, t0: number, restored: boolean): StageVm {
    const info: VmInfo = { accelerator: this.opts.accelerator, pid: vm.pid, bootMs: Date.now() - t0, restored };
    this.opts.log?.info({ runId: o.runId, stage: o.stage, ...info, guestKernel: kernelVersion }, "micro-VM ready");
    return new QemuStageVm(vm, info);
  }
}

/** What makes two fresh VMs interchangeable for a snapshot. */
function snapshotShape(o: VmSpawnOptions): SnapshotShape {
  return {
    qemuBinary: o.qemuBinary ?? "qemu-system-x86_64",
    kernel: o.kernel,
    initramfs: o.initramfs,
    kernelArgs: o.kernelArgs ?? [],
    machineOptions: o.machineOptions ?? microvmOptionsFor(o.kernel),
    memoryMb: o.memoryMb,
    vcpus: o.vcpus,
    accelerator: o.accelerator,
  };
}

/**
 * SEED: the host's random bytes and clock into the guest, answered by READY. Every fresh
 * VM gets it; for a restored one it is what makes the VM its own (see snapshots.ts).
 */
function seedGuest(vm: QemuVm, nowMs: number, timeoutMs: number, signal?: AbortSignal): Promise<ReadyResult> {
  const ready = waitReady(vm, timeoutMs, signal);
  vm.send("SEED", 0, nowMs, randomBytes(SEED_BYTES));
  return ready;
}

export type ReadyResult = { ok: true; kernelVersion: string } | { ok: false; reason: string };

/** Wait for the guest's READY frame, bounded by timeout, QEMU exit and abort. */
export function waitReady(vm: QemuVm, timeoutMs: number, signal?: AbortSignal): Promise<ReadyResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: ReadyResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(channelTimer);
      signal?.removeEventListener("abort", onAbort);
      vm.onFrame = () => {};
      vm.onChannelError = () => {};
      vm.onExit = () => {};
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: `no ready marker within ${timeoutMs} ms` }), timeoutMs);
    const onAbort = () => finish({ ok: false, reason: "boot aborted" });
    signal?.addEventListener("abort", onAbort, { once: true });
    vm.onFrame = (f) => {
      if (f.type === "READY") finish({ ok: true, kernelVersion: f.payload.toString("utf8").trim() });
      else if (f.type === "ERROR") finish({ ok: false, reason: `guest error: ${f.payload.toString("utf8")}` });
      else finish({ ok: false, reason: `unexpected ${f.type} frame before ready` });
    };
    // A QEMU that refuses to start closes the channel and exits at about the same time:
    // its exit (with QEMU's own message) says more, so it gets a moment to arrive first.
    let channelTimer: NodeJS.Timeout | undefined;
    vm.onChannelError = (e) => {
      channelTimer ??= setTimeout(() => finish({ ok: false, reason: `guest channel: ${e.message}` }), CHANNEL_EXIT_GRACE_MS);
    };
    vm.onExit = (e) =>
      finish({ ok: false, reason: `QEMU exited during boot (code ${e.exitCode}, signal ${e.signal})` });
    if (vm.exited) vm.onExit(vm.exited);
    if (signal?.aborted) onAbort();
  });
}
