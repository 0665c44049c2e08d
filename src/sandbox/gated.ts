import type { NodeSlots } from "../engine/node-slots.js";
import type { Sandbox, SandboxKind, StageVm, StageVmOptions } from "./types.js";

export interface BootObserver {
  /** A micro-VM finished booting; `warm` when it came from a pre-booted pool (none yet). */
  vmBooted(bootMs: number, kind: "warm" | "cold"): void;
}

/**
 * A micro-VM sandbox behind the node's VM slots: open() waits for a slot (bounded by
 * the attempt's signal, i.e. cancel and the stage timeout), and the slot is given back
 * when the VM is stopped or its boot failed.
 */
export class GatedSandbox implements Sandbox {
  readonly kind: SandboxKind;

  constructor(
    private readonly inner: Sandbox,
    private readonly slots: NodeSlots,
    private readonly observer: BootObserver,
  ) {
    this.kind = inner.kind;
  }

  async open(opts: StageVmOptions): Promise<StageVm> {
    const release = await this.slots.acquire({ memoryMib: opts.memoryMb, vcpus: opts.vcpus }, opts.signal);
    let vm: StageVm;
    try {
      vm = await this.inner.open(opts);
    } catch (e) {
      release();
      throw e;
    }
    if (vm.vm) this.observer.vmBooted(vm.vm.bootMs, "cold");
    return {
      vm: vm.vm,
      exec: (cmd) => vm.exec(cmd),
      readFile: (rel, max) => vm.readFile(rel, max),
      stop: async (graceMs) => {
        try {
          return await vm.stop(graceMs);
        } finally {
          release();
        }
      },
    };
  }
}
