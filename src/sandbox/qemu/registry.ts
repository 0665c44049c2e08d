/**
 * The micro-VMs this process spawned and that have not exited: what a shutdown stops,
 * and what a dying process SIGKILLs synchronously (its 'exit' hook).
 */
import type { QemuVm } from "./vm.js";

const live = new Set<QemuVm>();
let exitHookInstalled = false;

export function register(vm: QemuVm): void {
  live.add(vm);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Safety net: nothing asynchronous can run in 'exit', so SIGKILL synchronously.
    process.on("exit", () => {
      for (const v of live) v.killSync();
    });
  }
}

export function unregister(vm: QemuVm): void {
  live.delete(vm);
}

/** The live VMs, as a copy. */
export function liveVms(): QemuVm[] {
  return [...live];
}

/** VMs spawned by this process that have not exited yet. */
export function liveVmCount(): number {
  return live.size;
}

/** Stop every live VM (daemon shutdown): power off, SIGKILL after graceMs. */
export async function stopAllVms(graceMs: number): Promise<number> {
  const vms = [...live];
  await Promise.all(vms.map((v) => v.stop(graceMs).catch(() => undefined)));
  return vms.length;
}
