/**
 * The accelerator tests and benches boot their VMs under: "kvm" only when the guest boots
 * to its ready marker under `-accel kvm` before the deadline; "tcg" when /dev/kvm is
 * unusable or the KVM boot fails or times out. (The daemon does not use this: its
 * guest-boot probe, src/sandbox/guest-probe.ts, also proves that TCG boots.)
 */
import { kvmUsable } from "../../src/sandbox/probe-cache.js";
import { bootProbe } from "../../src/sandbox/qemu/index.js";
import type { Accelerator, Logger } from "../../src/sandbox/types.js";

export async function probeAccelerator(o: {
  kernel: string;
  initramfs: string;
  deadlineMs?: number;
  qemuBinary?: string;
  log?: Logger;
}): Promise<Accelerator> {
  if (!kvmUsable()) {
    o.log?.info({}, "accelerator probe: /dev/kvm not usable, using tcg");
    return "tcg";
  }
  const r = await bootProbe({ kernel: o.kernel, initramfs: o.initramfs, accelerator: "kvm", deadlineMs: o.deadlineMs ?? 4000, qemuBinary: o.qemuBinary });
  const acc: Accelerator = r.ok ? "kvm" : "tcg";
  o.log?.info({ accelerator: acc, ms: r.ms, reason: r.ok ? undefined : r.reason }, "accelerator probe");
  return acc;
}
