/** The QEMU sandbox: what the rest of the daemon (and benches, tests) use of qemu/. */
export { QemuSandbox, type QemuSandboxOptions } from "./sandbox.js";
export { VmSnapshots } from "./snapshots.js";
export { findGuestImage, type GuestImage } from "./guest-image.js";
export { bootProbe, probeAccelerator, qemuAvailable, withQemuMessage, type BootProbeResult } from "./probe.js";
export { killLeftoverVms } from "./leftovers.js";
export { liveVmCount, stopAllVms } from "./registry.js";
export { checkDieWithParent } from "./vm.js";
export { TCG_KERNEL_ARGS, TUNED_KERNEL_ARGS, hostTscKhz, microvmOptionsFor, tunedKernelArgs } from "./kernel-args.js";
