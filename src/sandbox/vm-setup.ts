import path from "node:path";
import type { Logger } from "pino";
import type { VmProvider } from "../runs/service.js";
import { dieWithParentAvailable, findGuestImage, killLeftoverVms, probeAccelerator, QemuSandbox, qemuAvailable, stopAllVms } from "./qemu/index.js";

export interface VmSetupOptions {
  /** `auto` (default) probes KVM by booting the guest; `kvm`/`tcg` force it. */
  accel?: "kvm" | "tcg" | "auto";
  /** Guest image overrides (default: the image `make guest` built under build/guest). */
  kernel?: string;
  initramfs?: string;
}

export interface VmSetup {
  provider: VmProvider;
  accelerator: "kvm" | "tcg" | null;
  kernelVersion: string | null;
  stopAll(graceMs: number): Promise<void>;
}

/** The accelerator probe boots a real guest: do it once per process. */
const probes = new Map<string, Promise<"kvm" | "tcg">>();

/**
 * Finds QEMU and the guest image, kills micro-VMs a dead daemon left behind (pid
 * files under the state dir; with setpriv there are none unless the daemon died while
 * spawning one), and picks the accelerator.
 */
export async function detectVm(o: VmSetupOptions & { stateDir: string; projectRoot: string; log: Logger }): Promise<VmSetup> {
  const pidDir = path.join(o.stateDir, "vms");
  const killed = await killLeftoverVms(pidDir, o.log);
  if (killed) o.log.warn({ killed }, "killed micro-VMs left over by a previous daemon");
  const none = (reason: string): VmSetup => {
    o.log.warn({ reason }, "micro-VMs unavailable; sandbox mode local will fail and auto falls back to mock");
    return { provider: { sandbox: null, unavailableReason: reason }, accelerator: null, kernelVersion: null, stopAll: async () => {} };
  };
  if (!qemuAvailable()) return none("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
  const found = findGuestImage(o.projectRoot);
  const image = o.kernel && o.initramfs ? { kernel: o.kernel, initramfs: o.initramfs, kernelVersion: found?.kernelVersion ?? "unknown" } : found;
  if (!image) return none("no guest image (run: make guest)");
  const dieWithParent = dieWithParentAvailable();
  if (!dieWithParent)
    o.log.warn({}, "setpriv (util-linux) with --pdeathsig is not available: micro-VMs will outlive a daemon killed by SIGKILL until the next start cleans them up");

  let accelerator: "kvm" | "tcg";
  if (o.accel === "kvm" || o.accel === "tcg") accelerator = o.accel;
  else {
    const key = `${image.kernel}:${image.initramfs}`;
    if (!probes.has(key)) probes.set(key, probeAccelerator({ kernel: image.kernel, initramfs: image.initramfs, dieWithParent, log: o.log }));
    accelerator = await probes.get(key)!;
  }
  o.log.info({ accelerator, kernel: image.kernel, guest_kernel: image.kernelVersion }, "micro-VMs available");
  const sandbox = new QemuSandbox({ kernel: image.kernel, initramfs: image.initramfs, accelerator, pidDir, dieWithParent, log: o.log });
  return {
    provider: { sandbox, unavailableReason: "" },
    accelerator,
    kernelVersion: image.kernelVersion,
    stopAll: async (graceMs) => void (await stopAllVms(graceMs)),
  };
}
