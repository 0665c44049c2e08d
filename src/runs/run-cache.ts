import type { Run } from "./run.js";

/** What a loaded run costs in memory, roughly: its events as objects plus their encoded lines. */
const cost = (run: Run) => 3 * run.jsonBytes + 4096;

/**
 * Terminal runs read back from disk, least recently used first out once their events
 * together pass `maxBytes` (the most recent one always stays: it is being served).
 */
export class RunCache {
  private readonly runs = new Map<string, Run>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get(id: string): Run | undefined {
    const run = this.runs.get(id);
    if (run) {
      this.runs.delete(id);
      this.runs.set(id, run);
    }
    return run;
  }

  put(run: Run): void {
    this.delete(run.id);
    this.runs.set(run.id, run);
    this.bytes += cost(run);
    for (const [id] of this.runs) {
      if (this.bytes <= this.maxBytes || this.runs.size <= 1) break;
      this.delete(id);
    }
  }

  delete(id: string): void {
    const run = this.runs.get(id);
    if (!run) return;
    this.runs.delete(id);
    this.bytes -= cost(run);
  }

  get size(): number {
    return this.runs.size;
  }
}
