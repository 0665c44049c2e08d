import { SandboxError } from "../sandbox/types.js";

/** What one micro-VM takes from the node while it is alive. */
export interface VmClaim {
  memoryMib: number;
  vcpus: number;
}

export interface SlotUsage {
  vms: number;
  memoryMib: number;
  vcpus: number;
  /** Stages waiting for a slot. */
  waiting: number;
}

interface Waiter {
  claim: VmClaim;
  grant: () => void;
}

/**
 * The node-wide micro-VM gate, next to each run's own parallel cap: at most `maxVms`
 * VMs and `maxMemoryMib` of guest memory alive at once, all runs together. Waiters are
 * served strictly first come, first served, so a large VM is not starved by small ones.
 */
export class NodeSlots {
  private readonly used: SlotUsage = { vms: 0, memoryMib: 0, vcpus: 0, waiting: 0 };
  private waiters: Waiter[] = [];

  constructor(
    readonly maxVms: number,
    readonly maxMemoryMib: number,
  ) {}

  usage(): SlotUsage {
    return { ...this.used, waiting: this.waiters.length };
  }

  /** Stages already wait for a VM: a new run would only lengthen the queue. */
  saturated(): boolean {
    return this.waiters.length > 0;
  }

  /**
   * Resolves with a release function (idempotent) once the claim fits; rejects when
   * `signal` aborts first (cancel, stage timeout) or when the claim can never fit.
   */
  acquire(claim: VmClaim, signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (claim.memoryMib > this.maxMemoryMib)
      return Promise.reject(new SandboxError(`the stage needs ${claim.memoryMib} MiB of guest memory, more than this node gives all guests together (${this.maxMemoryMib} MiB)`));
    if (!this.waiters.length && this.fits(claim)) return Promise.resolve(this.take(claim));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        claim,
        grant: () => {
          signal.removeEventListener("abort", onAbort);
          resolve(this.take(claim));
        },
      };
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        this.wake(); // the head may have been what held the others back
        reject(signal.reason);
      };
      this.waiters.push(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  private fits(c: VmClaim): boolean {
    return this.used.vms < this.maxVms && this.used.memoryMib + c.memoryMib <= this.maxMemoryMib;
  }

  private take(c: VmClaim): () => void {
    this.used.vms++;
    this.used.memoryMib += c.memoryMib;
    this.used.vcpus += c.vcpus;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used.vms--;
      this.used.memoryMib -= c.memoryMib;
      this.used.vcpus -= c.vcpus;
      this.wake();
    };
  }

  private wake(): void {
    while (this.waiters.length && this.fits(this.waiters[0].claim)) this.waiters.shift()!.grant();
  }
}
