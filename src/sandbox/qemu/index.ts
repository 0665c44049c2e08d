/** The QEMU sandbox: what the rest of the daemon (and benches, tests) use of qemu/. */
export { QemuSandbox } from "./sandbox.js";
export { VmSnapshots } from "./snapshots.js";
export { findGuestImage, type GuestImage } from "./guest-image.js";
export { bootProbe, qemuAvailable } from "./probe.js";
export { killLeftoverVms } from "./leftovers.js";
export { liveVmCount, stopAllVms } from "./registry.js";
export { checkDieWithParent } from "./vm.js";
export { TCG_KERNEL_ARGS, tunedKernelArgs } from "./kernel-args.js";
