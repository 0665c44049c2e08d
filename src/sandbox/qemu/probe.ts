/**
 * Whether a guest boots here, and under which accelerator: one boot plus one command,
 * bounded by a deadline (the daemon's guest-boot probe; benchmarks and tests pick their
 * accelerator with it through test/helpers/accelerator.ts).
 */
import { spawnSync } from "node:child_process";
import type { Accelerator } from "../types.js";
import { waitReady } from "./sandbox.js";
import { QemuStageVm } from "./stage-vm.js";
import { QemuVm } from "./vm.js";

/** `reason` plus the last lines QEMU or the guest printed (QEMU's own error message when it refused to start). */
export function withQemuMessage(reason: string, output: string): string {
  const lines = output.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
  const tail = lines.slice(-3).join(" | ").slice(-400);
  return tail ? `${reason}: ${tail}` : reason;
}

export type BootProbeResult = { ok: true; ms: number; kernelVersion: string } | { ok: false; ms: number; reason: string };

/** Runs PROBE_COMMAND before `deadline` (epoch ms); null when it printed what it should, else why not. */
async function probeCommand(vm: QemuStageVm, deadline: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const ms = Math.max(1000, deadline - Date.now());
  const timedOut = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`did not finish a command within ${ms} ms`), ms)));
  const ran = vm
    .exec({ ...PROBE_COMMAND, env: {}, stdin: Buffer.alloc(0), signal: new AbortController().signal, maxOutputBytes: 4096 })
    .then(
      (x) => (x.exitCode === 0 && x.stdout.toString() === PROBE_OUTPUT ? null : `a command in it failed (exit ${x.exitCode}: ${x.stdout.toString().slice(0, 80)})`),
      (e: Error) => `a command in it failed: ${e.message}`,
    );
  try {
    return await Promise.race([ran, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the probe runs once the guest is ready, and the output that proves it ran. */
const PROBE_COMMAND = { program: "echo", args: ["voidbox-probe-ok"] };
const PROBE_OUTPUT = "voidbox-probe-ok\n";

/**
 * Boots the guest once under `accelerator` (1 vCPU, 256 MiB, no network), waits for its
 * ready marker and runs one command in it, all bounded by `deadlineMs`: a guest that
 * boots but cannot finish a command (a kernel whose timers never fire) fails here, not
 * in every run. The VM is always killed, and dies with this process (parent-death
 * signal); its pid file (in `pidDir`) is the fallback when setpriv is missing.
 */
export async function bootProbe(o: {
  kernel: string;
  initramfs: string;
  accelerator: Accelerator;
  deadlineMs: number;
  qemuBinary?: string;
  pidDir?: string;
  signal?: AbortSignal;
}): Promise<BootProbeResult> {
  const t0 = Date.now();
  let vm: QemuVm | null = null;
  try {
    vm = await QemuVm.spawn({
      kernel: o.kernel,
      initramfs: o.initramfs,
      accelerator: o.accelerator,
      memoryMb: 256,
      vcpus: 1,
      network: false,
      runId: "probe",
      stage: o.accelerator,
      pidDir: o.pidDir,
      qemuBinary: o.qemuBinary,
    });
    const r = await waitReady(vm, o.deadlineMs, o.signal);
    if (r.ok) {
      const failed = await probeCommand(new QemuStageVm(vm, { accelerator: o.accelerator, pid: vm.pid, bootMs: Date.now() - t0 }), t0 + o.deadlineMs);
      if (failed === null) return { ok: true, ms: Date.now() - t0, kernelVersion: r.kernelVersion };
      return { ok: false, ms: Date.now() - t0, reason: `guest ${r.kernelVersion} booted but ${failed}` };
    }
    const ms = Date.now() - t0;
    // QEMU's last words (its error when it refuses to start) may still be in the pipe.
    if (vm.exited) await vm.waitOutput(1000);
    return { ok: false, ms, reason: withQemuMessage(r.reason, vm.consoleText(2000)) };
  } catch (e) {
    return { ok: false, ms: Date.now() - t0, reason: `cannot start QEMU: ${(e as Error).message}` };
  } finally {
    await vm?.stop(0);
  }
}

/** True when `qemu-system-x86_64` runs (found on the PATH and answers --version). */
export function qemuAvailable(binary = "qemu-system-x86_64"): boolean {
  return spawnSync(binary, ["--version"], { stdio: "ignore", timeout: 10_000 }).status === 0;
}
