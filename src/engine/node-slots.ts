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
  private waking = false;
  /**
   * Frees one slot held by something idle (a warm-pool VM), synchronously; false when
   * nothing can be freed. A stage never waits while an idle VM holds what it needs.
   */
  evictIdle: (() => boolean) | null = null;
  /** Told after a slot is given back (the warm pool refills then). */
  onRelease: (() => void) | null = null;

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
    if (!this.waiters.length && this.fitsEvicting(claim)) return Promise.resolve(this.take(claim));
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

  /**
   * Takes a slot only when it fits now and no stage waits (the warm pool's boots:
   * they never queue ahead of a stage nor evict anything); null otherwise.
   */
  tryAcquire(claim: VmClaim): (() => void) | null {
    return !this.waiters.length && this.fits(claim) ? this.take(claim) : null;
  }

  /** fits(c), after evicting idle VMs as long as that helps. */
  private fitsEvicting(c: VmClaim): boolean {
    while (!this.fits(c)) {
      if (c.memoryMib > this.maxMemoryMib || !this.evictIdle?.()) return false;
    }
    return true;
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
      this.onRelease?.();
    };
  }

  private wake(): void {
    // An eviction releases a slot, which calls wake() again: the outer loop carries on.
    if (this.waking) return;
    this.waking = true;
    try {
      while (this.waiters.length && this.fitsEvicting(this.waiters[0].claim)) this.waiters.shift()!.grant();
    } finally {
      this.waking = false;
    }
  }
}
