/**
 * The guest-boot probe: proves that a micro-VM really boots on this host under the
 * accelerator it selects. `auto` tries KVM (when /dev/kvm is usable) with a short
 * deadline, then TCG; a forced accelerator is booted once to check it. TCG is proven
 * too: Debian's QEMU loads TCG as a module, and without it no guest starts at all.
 */
import type { components } from "../../generated/api.js";
import { bootProbe } from "./qemu/index.js";
import type { AccelMode, Accelerator } from "./types.js";

export type BootFailure = components["schemas"]["BootFailure"];

/** KVM boots a guest in well under a second; a host whose KVM takes longer (nested hypervisors) is better off on TCG. */
const KVM_PROBE_DEADLINE_MS = 4000;

export type ProbeOutcome =
  | { ok: true; accelerator: Accelerator; bootMs: number; kernelVersion: string; failures: BootFailure[] }
  | { ok: false; reason: string; failures: BootFailure[] };

export async function probeGuest(o: {
  kernel: string;
  initramfs: string;
  accel: AccelMode;
  kvmUsable: boolean;
  /** Deadline of a TCG boot (and of a forced KVM boot). */
  deadlineMs: number;
  qemuBinary?: string;
  pidDir?: string;
  signal?: AbortSignal;
  now?: () => number;
}): Promise<ProbeOutcome> {
  const now = o.now ?? Date.now;
  const failures: BootFailure[] = [];
  const failed = (accelerator: Accelerator | null, reason: string) =>
    failures.unshift({ at: new Date(now()).toISOString(), source: "probe", accelerator, run_id: null, stage: null, reason });

  if (o.accel === "kvm" && !o.kvmUsable) {
    const reason = "--accel kvm: /dev/kvm is missing or not readable and writable by this user";
    failed("kvm", reason);
    return { ok: false, reason, failures };
  }
  const attempts: Array<{ accelerator: Accelerator; deadlineMs: number }> =
    o.accel === "auto"
      ? [...(o.kvmUsable ? [{ accelerator: "kvm" as const, deadlineMs: Math.min(KVM_PROBE_DEADLINE_MS, o.deadlineMs) }] : []), { accelerator: "tcg", deadlineMs: o.deadlineMs }]
      : [{ accelerator: o.accel, deadlineMs: o.deadlineMs }];

  let reason = "";
  for (const a of attempts) {
    const r = await bootProbe({ kernel: o.kernel, initramfs: o.initramfs, accelerator: a.accelerator, deadlineMs: a.deadlineMs, qemuBinary: o.qemuBinary, pidDir: o.pidDir, signal: o.signal });
    if (r.ok) return { ok: true, accelerator: a.accelerator, bootMs: r.ms, kernelVersion: r.kernelVersion, failures };
    reason = `${a.accelerator}: ${r.reason}`;
    failed(a.accelerator, r.reason);
    if (o.signal?.aborted) break;
  }
  return { ok: false, reason, failures };
}
