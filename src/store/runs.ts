import fs from "node:fs";
import path from "node:path";
import { isSafeId } from "../ids.js";
import type { RunEvent, RunFile } from "../run-model.js";
import { appendAtomically, ensureDir, linkFileAtomic, readJsonLinesLenient, removeTempFiles, writeFileAtomic } from "./fsutil.js";
import { readFreshSummary, writeSummary, type RunSummary } from "./summary.js";
import { readLegacyRun } from "./legacy.js";

/** A run as found on disk at startup. */
export interface LoadedRun {
  file: RunFile;
  events: RunEvent[];
  /** Each event's line as read from events.jsonl (absent for a Rust run file). */
  lines?: string[];
  /**
   * Its run.json and events.jsonl are as they were when its summary.json was written (by
   * this daemon after writing them, or after they passed every check): size and mtime match.
   */
  unchanged?: boolean;
  /** true for a Rust void-box `runs/<id>.json` (full RunState with events). */
  legacy: boolean;
}

export interface LoadResult {
  runs: LoadedRun[];
  /** Terminal runs listed from their up-to-date summary.json: their files are read when first asked for. */
  stored: RunSummary[];
  /** Paths (relative to the state dir) moved to quarantine/ because they were corrupt (or, if they could not be moved, left where they are and not loaded). */
  quarantined: string[];
  /** Why each of `quarantined` was. */
  reasons: string[];
  /** Run directories of creates that crashed before their first write (removed). */
  interrupted: string[];
}

/**
 * Runs under `<stateDir>/runs/<id>/`: `run.json` (the run without its events, replaced
 * atomically on each transition), `events.jsonl` (append-only; appending never
 * rewrites anything), and `stages/<stage>/{result.json,artifacts/<name>}`.
 */
export class RunStore {
  readonly runsDir: string;
  private readonly quarantineDir: string;
  private readonly eventFds = new Map<string, number>();
  /** Bytes of each run's events.jsonl that hold whole, acknowledged lines; appends continue from there. */
  private readonly eventBytes = new Map<string, number>();
  /** Logs that may hold bytes past eventBytes (just opened, or after a failed append): checked before the next append. */
  private readonly unsure = new Set<string>();

  constructor(readonly stateDir: string) {
    this.runsDir = path.join(stateDir, "runs");
    this.quarantineDir = path.join(stateDir, "quarantine");
    bestEffort(() => ensureDir(this.runsDir)); // a read-only state dir is still served; writes fail later, each with an owner
  }

  private dir(id: string): string {
    if (!isSafeId(id)) throw new Error(`unsafe run id ${JSON.stringify(id)}`);
    return path.join(this.runsDir, id);
  }

  saveRun(run: RunFile): void {
    const dir = this.dir(run.id);
    ensureDir(dir);
    writeFileAtomic(path.join(dir, "run.json"), JSON.stringify(run, null, 1));
  }

  /** Appends one event line, whole or not at all (a failed write is cut off again); throws on failure. */
  appendEvent(id: string, line: string): void {
    let fd = this.eventFds.get(id);
    if (fd === undefined) {
      ensureDir(this.dir(id));
      fd = fs.openSync(path.join(this.dir(id), "events.jsonl"), "a", 0o600);
      this.eventFds.set(id, fd);
      this.unsure.add(id);
    }
    // A log this daemon did not load is new: anything in it is left by a create that failed.
    const valid = this.eventBytes.get(id) ?? 0;
    try {
      this.eventBytes.set(id, appendAtomically(fd, valid, line + "\n", `runs/${id}/events.jsonl`, this.unsure.has(id)));
      this.unsure.delete(id);
    } catch (e) {
      this.unsure.add(id);
      throw e;
    }
  }

  /** Replaces a run's whole event log (migration of a Rust run file). */
  writeEvents(id: string, lines: string[]): void {
    this.closeRun(id);
    ensureDir(this.dir(id));
    const text = lines.map((l) => l + "\n").join("");
    writeFileAtomic(path.join(this.dir(id), "events.jsonl"), text);
    this.eventBytes.set(id, Buffer.byteLength(text));
  }

  /**
   * Removes what a create that failed before its commit (the run.json rename) left: it
   * was never acknowledged. Best effort: a directory without run.json is removed at the
   * next start anyway.
   */
  discardRun(id: string): void {
    try {
      this.closeRun(id);
    } catch {
      // the fd is gone either way
    }
    this.eventBytes.delete(id);
    this.unsure.delete(id);
    try {
      fs.rmSync(this.dir(id), { recursive: true, force: true });
    } catch {
      // read-only: see above
    }
  }

  /** Records a terminal run's summary (after its run.json): the next start lists it from this alone. */
  saveSummary(summary: RunSummary): void {
    writeSummary(this.dir(summary.id), summary);
  }

  /** Makes the appended events durable (called before acknowledging a terminal state). */
  syncEvents(id: string): void {
    const fd = this.eventFds.get(id);
    if (fd !== undefined) fs.fsyncSync(fd);
  }

  closeRun(id: string): void {
    const fd = this.eventFds.get(id);
    if (fd === undefined) return;
    this.eventFds.delete(id);
    fs.closeSync(fd);
  }

  /** Flushes and closes every log; throws the first failure after closing them all. */
  close(): void {
    let first: unknown;
    for (const id of [...this.eventFds.keys()]) {
      try {
        this.syncEvents(id);
      } catch (e) {
        first ??= e;
      }
      this.closeRun(id);
    }
    if (first) throw first;
  }

  private stageDir(id: string, stage: string): string {
    if (!isSafeId(stage)) throw new Error(`unsafe stage name ${JSON.stringify(stage)}`);
    return path.join(this.dir(id), "stages", stage);
  }

  writeResult(id: string, stage: string, bytes: Buffer): void {
    const dir = this.stageDir(id, stage);
    ensureDir(dir);
    writeFileAtomic(path.join(dir, "result.json"), bytes);
  }

  readResult(id: string, stage: string): Buffer | null {
    return readIfExists(path.join(this.stageDir(id, stage), "result.json"));
  }

  writeArtifact(id: string, stage: string, name: string, bytes: Buffer): void {
    if (!isSafeId(name)) throw new Error(`unsafe artifact name ${JSON.stringify(name)}`);
    const dir = path.join(this.stageDir(id, stage), "artifacts");
    ensureDir(dir);
    writeFileAtomic(path.join(dir, name), bytes);
  }

  /**
   * Publishes stage `from`'s result.json and the named artifacts under stage `to` as
   * hard links: the same bytes on disk once, served identically under both names.
   */
  aliasStage(id: string, from: string, to: string, artifacts: string[]): void {
    const src = this.stageDir(id, from);
    const dest = this.stageDir(id, to);
    ensureDir(dest);
    linkFileAtomic(path.join(src, "result.json"), path.join(dest, "result.json"));
    if (!artifacts.length) return;
    ensureDir(path.join(dest, "artifacts"));
    for (const name of artifacts) {
      if (!isSafeId(name)) throw new Error(`unsafe artifact name ${JSON.stringify(name)}`);
      linkFileAtomic(path.join(src, "artifacts", name), path.join(dest, "artifacts", name));
    }
  }

  readArtifact(id: string, stage: string, name: string): Buffer | null {
    if (!isSafeId(name)) return null;
    return readIfExists(path.join(this.stageDir(id, stage), "artifacts", name));
  }

  /**
   * Loads every readable run; `accept` checks (and may normalise) each one and throws
   * when it does not conform. Corrupt or non-conforming files are moved aside, never
   * fatal for the others. A run whose summary.json is up to date and passes
   * `acceptSummary` is listed from it alone (in `stored`), its files left unread.
   */
  loadAll(accept: (run: LoadedRun) => LoadedRun = (r) => r, acceptSummary?: (s: unknown) => RunSummary | null): LoadResult {
    const runs: LoadedRun[] = [];
    const stored: RunSummary[] = [];
    const quarantined: string[] = [];
    const reasons: string[] = [];
    const interrupted: string[] = [];
    if (!fs.existsSync(this.runsDir)) return { runs, stored, quarantined, reasons, interrupted };
    for (const entry of fs.readdirSync(this.runsDir, { withFileTypes: true })) {
      const full = path.join(this.runsDir, entry.name);
      try {
        if (entry.isDirectory() && isSafeId(entry.name)) {
          const summary = acceptSummary && acceptSummary(readFreshSummary(full));
          if (summary && summary.id === entry.name) {
            stored.push(summary);
            continue;
          }
          bestEffort(() => removeTempFiles(full));
          if (!fs.existsSync(path.join(full, "run.json"))) {
            // A create interrupted (or failed) before its commit: never acknowledged, nothing to keep.
            bestEffort(() => fs.rmSync(full, { recursive: true, force: true }));
            interrupted.push(entry.name);
            continue;
          }
          runs.push(accept(this.readRunDir(entry.name)));
        } else if (entry.isFile() && entry.name.endsWith(".json") && isSafeId(entry.name.slice(0, -5))) {
          // Already migrated to our layout (a crash between migration and retiring the file).
          if (fs.existsSync(path.join(this.runsDir, entry.name.slice(0, -5), "run.json"))) {
            bestEffort(() => this.retireLegacy(entry.name.slice(0, -5)));
            continue;
          }
          runs.push(accept(readLegacyRun(full, entry.name.slice(0, -5))));
        } else if (entry.name.startsWith(".") && entry.name.endsWith(".tmp")) {
          bestEffort(() => fs.rmSync(full, { force: true }));
        }
      } catch (e) {
        quarantined.push(this.quarantine(full, e));
        reasons.push(e instanceof Error ? e.message : String(e));
      }
    }
    return { runs, stored, quarantined, reasons, interrupted };
  }

  /** run.json and events.jsonl of one run; throws when either is damaged. */
  private readRunDir(id: string): LoadedRun {
    const full = this.dir(id);
    const file = JSON.parse(fs.readFileSync(path.join(full, "run.json"), "utf8")) as RunFile;
    if (!file || typeof file !== "object" || file.id !== id) throw new Error(`run.json does not name run ${id}`);
    const log = readJsonLinesLenient(path.join(full, "events.jsonl"));
    if (log.badLines.length) throw new Error(`events.jsonl: line ${log.badLines[0]} is not valid JSON`);
    this.eventBytes.set(id, log.validBytes);
    return { file, events: log.values as RunEvent[], lines: log.lines, legacy: false };
  }

  /** A run listed from its summary, read in full now (throws when damaged: see quarantineRun). */
  loadRun(id: string, tidy = true): LoadedRun {
    if (tidy) bestEffort(() => removeTempFiles(this.dir(id)));
    const unchanged = readFreshSummary(this.dir(id)) !== null;
    return { ...this.readRunDir(id), unchanged };
  }

  /** Moves a damaged run's directory to quarantine/; returns the path to report (see quarantine). */
  quarantineRun(id: string, why: unknown): string {
    this.eventBytes.delete(id);
    return this.quarantine(this.dir(id), why);
  }

  /** After a Rust-format `runs/<id>.json` has been written in our layout, keep it only as a backup. */
  retireLegacy(id: string): void {
    fs.renameSync(path.join(this.runsDir, `${id}.json`), path.join(this.runsDir, `${id}.json.migrated`));
  }

  /** Moves a corrupt file aside with its reason; if the state dir cannot be written, it stays (and is not loaded). */
  private quarantine(full: string, why: unknown): string {
    const dest = path.join(this.quarantineDir, `${path.basename(full)}.${Date.now()}`);
    try {
      ensureDir(this.quarantineDir);
      fs.renameSync(full, dest);
    } catch {
      return path.relative(this.stateDir, full);
    }
    try {
      fs.writeFileSync(`${dest}.reason`, String(why instanceof Error ? why.message : why) + "\n");
    } catch {
      // the file is aside; its reason is also in the daemon's log
    }
    return path.relative(this.stateDir, dest);
  }
}

/** Housekeeping that may fail on a read-only or full state dir without making the state unreadable. */
function bestEffort(fn: () => void): void {
  try {
    fn();
  } catch {
    // retried at the next start
  }
}

function readIfExists(file: string): Buffer | null {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}
