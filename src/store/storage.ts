import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import type { components } from "../../generated/api.js";

type Health = components["schemas"]["Health"];

/**
 * The state dir's health as the daemon last saw it. A write that fails for a storage
 * reason (full, read-only, I/O error) never takes the daemon down: it is turned into a
 * StorageError, the state below changes, and a probe timer notices when writes work again.
 */
export type StorageCondition = NonNullable<Health["storage"]>;

/** A write to the state dir that failed (or was refused) for a storage reason. Rendered as 507. */
export class StorageError extends Error {
  constructor(
    readonly condition: Exclude<StorageCondition, "ok">,
    message: string,
  ) {
    super(message);
    this.name = "StorageError";
  }
}

const LOW_SPACE = new Set(["ENOSPC", "EDQUOT", "EFBIG"]);
const READ_ONLY = new Set(["EROFS", "EPERM", "EACCES"]);

/** The storage condition an error from an fs call stands for; null when it is not an fs error. */
function conditionOf(e: unknown): Exclude<StorageCondition, "ok"> | null {
  if (e instanceof StorageError) return e.condition;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof code !== "string" || !/^E[A-Z0-9]+$/.test(code)) return null;
  if (LOW_SPACE.has(code)) return "low_space";
  if (READ_ONLY.has(code)) return "read_only";
  return "failing";
}

export function isStorageError(e: unknown): boolean {
  return conditionOf(e) !== null;
}

/** A short write (the kernel took fewer bytes than asked and reported no error). */
export class ShortWriteError extends Error {
  readonly code = "ENOSPC";
  constructor(file: string, wrote: number, wanted: number) {
    super(`short write to ${file}: ${wrote} of ${wanted} bytes`);
  }
}

/** Health's storage fields, always present where the daemon reports them. */
export type StorageHealth = Required<Pick<Health, "storage" | "storage_reason">>;

const PROBE_INTERVAL_MS = 1000;

/**
 * Admission and recovery for writes to the state dir: new durable work (runs, session
 * messages) is refused with a StorageError while the state dir is known to be failing or
 * below the free-space floor; a failed write is reported here and a timer probes the
 * state dir until writes work again, then calls the recovery listeners.
 */
export class StorageGuard {
  private condition: StorageCondition = "ok";
  private reason: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly listeners: Array<() => void> = [];
  private closed = false;
  private lastLogged: { reason: string | null; at: number } = { reason: null, at: 0 };

  constructor(
    private readonly dir: string,
    private readonly minFreeBytes: number,
    private readonly log: Logger,
  ) {}

  /** Called once writes work again (after a fault). */
  onRecovered(fn: () => void): void {
    this.listeners.push(fn);
  }

  /** Free bytes for unprivileged writers, or null if the filesystem cannot say. */
  freeBytes(): number | null {
    try {
      const s = fs.statfsSync(this.dir);
      return s.bavail * s.bsize;
    } catch {
      return null;
    }
  }

  /** Throws a StorageError unless new durable work (`what`) can be accepted now. */
  admit(what: string): void {
    if (this.condition !== "ok" && !this.probe()) throw new StorageError(this.condition as Exclude<StorageCondition, "ok">, `${what} refused: ${this.reason}`);
    const free = this.freeBytes();
    if (free !== null && free < this.minFreeBytes)
      throw new StorageError("low_space", `${what} refused: the state dir has ${free} bytes free, below the floor of ${this.minFreeBytes} (--min-free-space)`);
  }

  /**
   * Records a failed write and returns it as a StorageError (the same one if it is one
   * already); starts probing for recovery. Errors that are not storage errors are returned as is.
   */
  fault(e: unknown): Error {
    const condition = conditionOf(e);
    if (!condition) return e instanceof Error ? e : new Error(String(e));
    const err = e instanceof StorageError ? e : new StorageError(condition, describe(condition, e));
    // A fault that keeps coming back (probe works, real writes fail) is logged once a minute, not once a probe.
    const now = Date.now();
    if (this.lastLogged.reason !== err.message || now - this.lastLogged.at > 60_000) {
      this.log.error({ condition, reason: err.message }, "state dir write failed");
      this.lastLogged = { reason: err.message, at: now };
    }
    this.condition = condition;
    this.reason = err.message;
    this.startProbing();
    return err;
  }

  /** Startup: is the state dir writable at all? (Also removes probe files a killed daemon left.) */
  checkWritable(): void {
    try {
      for (const f of fs.readdirSync(this.dir)) if (/^\.probe\.\d+\.tmp$/.test(f)) fs.rmSync(path.join(this.dir, f), { force: true });
    } catch {
      // read-only: the probe below says so
    }
    this.probe();
    if (this.condition !== "ok") this.startProbing();
  }

  /** Writes, fsyncs and removes a small file; true (and recovery) when that works. */
  probe(): boolean {
    const file = path.join(this.dir, `.probe.${process.pid}.tmp`);
    try {
      const fd = fs.openSync(file, "w", 0o600);
      try {
        fs.writeSync(fd, "x");
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
        fs.rmSync(file, { force: true });
      }
    } catch (e) {
      const condition = conditionOf(e) ?? "failing";
      this.condition = condition;
      this.reason = describe(condition, e);
      return false;
    }
    if (this.condition !== "ok") {
      this.log.warn({ previous: this.condition }, "state dir writable again");
      this.condition = "ok";
      this.reason = null;
      this.stopProbing();
      for (const fn of this.listeners) fn();
    }
    return true;
  }

  health(): StorageHealth {
    if (this.condition !== "ok") return { storage: this.condition, storage_reason: this.reason };
    const free = this.freeBytes();
    if (free !== null && free < this.minFreeBytes)
      return { storage: "low_space", storage_reason: `${free} bytes free, below the floor of ${this.minFreeBytes}: new runs and session messages are refused` };
    return { storage: "ok", storage_reason: null };
  }

  private startProbing(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => this.probe(), PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  private stopProbing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  close(): void {
    this.closed = true;
    this.stopProbing();
  }
}

function describe(condition: Exclude<StorageCondition, "ok">, e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code ?? "";
  const what = condition === "low_space" ? "is full" : condition === "read_only" ? "is read-only" : "has an I/O error";
  return `state dir ${what} (${code || (e as Error).message})`;
}
