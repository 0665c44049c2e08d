import type { NodeSlots } from "../engine/node-slots.js";
import type { Sandbox, SandboxKind, StageVm, StageVmOptions } from "./types.js";
import type { WarmPool } from "./warm-pool.js";

export interface BootObserver {
  /** A stage got a ready micro-VM after `ms`: `warm` when claimed from the pre-booted pool, `cold` when booted for it. */
  vmBooted(ms: number, kind: "warm" | "cold"): void;
}

/**
 * A micro-VM sandbox behind the node's VM slots: open() takes a ready VM of the
 * attempt's shape from the warm pool when there is one (its slot comes with it), else
 * waits for a slot (bounded by the attempt's signal, i.e. cancel and the stage
 * timeout) and boots one. The slot is given back when the VM is stopped or its boot
 * failed.
 */
export class GatedSandbox implements Sandbox {
  readonly kind: SandboxKind;

  constructor(
    private readonly inner: Sandbox,
    private readonly slots: NodeSlots,
    private readonly observer: BootObserver,
    private readonly pool: WarmPool | null = null,
  ) {
    this.kind = inner.kind;
  }

  async open(opts: StageVmOptions): Promise<StageVm> {
    const t0 = Date.now();
    const warm = opts.signal.aborted ? null : (this.pool?.claim(opts) ?? null);
    if (warm) {
      warm.vm.foreground?.();
      const startMs = Date.now() - t0;
      this.observer.vmBooted(startMs, "warm");
      return wrap(warm.vm, warm.release, warm.vm.vm && { ...warm.vm.vm, warm: true, startMs });
    }
    const release = await this.slots.acquire({ memoryMib: opts.memoryMb, vcpus: opts.vcpus }, opts.signal);
    let vm: StageVm;
    try {
      vm = await this.inner.open(opts);
    } catch (e) {
      release();
      throw e;
    }
    if (vm.vm) this.observer.vmBooted(vm.vm.bootMs, "cold");
    return wrap(vm, release, vm.vm && { ...vm.vm, warm: false, startMs: vm.vm.bootMs });
  }
}

/** The VM with `info` as its VmInfo; its stop gives the node slot back. */
function wrap(vm: StageVm, release: () => void, info: StageVm["vm"]): StageVm {
  return {
    vm: info,
    exec: (cmd) => vm.exec(cmd),
    readFile: (rel, max) => vm.readFile(rel, max),
    closed: vm.closed,
    stop: async (graceMs) => {
      try {
        return await vm.stop(graceMs);
      } finally {
        release();
      }
    },
  };
}
