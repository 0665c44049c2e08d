/** A counting semaphore (FIFO) for the per-run parallel cap. */
export class Semaphore {
  private waiters: Array<() => void> = [];
  private inUse = 0;

  constructor(private readonly limit: number) {}

  /** Resolves when a slot is free; rejects if `signal` aborts first. */
  acquire(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.inUse < this.limit) {
      this.inUse++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener("abort", onAbort);
        this.inUse++;
        resolve();
      };
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== grant);
        reject(signal.reason);
      };
      this.waiters.push(grant);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  release(): void {
    this.inUse--;
    this.waiters.shift()?.();
  }
}
