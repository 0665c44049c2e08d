import fs from "node:fs";
import path from "node:path";
import { isSafeId } from "../ids.js";
import type { RunEvent, RunFile } from "../runs/model.js";
import { ensureDir, linkFileAtomic, readJsonLines, removeTempFiles, writeFileAtomic } from "./fsutil.js";

/** A run as found on disk at startup. */
export interface LoadedRun {
  file: RunFile;
  events: RunEvent[];
  /** true for a Rust void-box `runs/<id>.json` (full RunState with events). */
  legacy: boolean;
}

export interface LoadResult {
  runs: LoadedRun[];
  /** Paths (relative to the state dir) moved to quarantine/ because they were corrupt. */
  quarantined: string[];
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

  constructor(readonly stateDir: string) {
    this.runsDir = path.join(stateDir, "runs");
    this.quarantineDir = path.join(stateDir, "quarantine");
    ensureDir(this.runsDir);
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

  appendEvent(id: string, line: string): void {
    let fd = this.eventFds.get(id);
    if (fd === undefined) {
      ensureDir(this.dir(id));
      fd = fs.openSync(path.join(this.dir(id), "events.jsonl"), "a", 0o600);
      this.eventFds.set(id, fd);
    }
    fs.writeSync(fd, line + "\n");
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

  close(): void {
    for (const id of [...this.eventFds.keys()]) {
      this.syncEvents(id);
      this.closeRun(id);
    }
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

  /** Loads every readable run; corrupt files are moved aside, never fatal for the others. */
  loadAll(): LoadResult {
    const runs: LoadedRun[] = [];
    const quarantined: string[] = [];
    const interrupted: string[] = [];
    for (const entry of fs.readdirSync(this.runsDir, { withFileTypes: true })) {
      const full = path.join(this.runsDir, entry.name);
      try {
        if (entry.isDirectory() && isSafeId(entry.name)) {
          removeTempFiles(full);
          if (!fs.existsSync(path.join(full, "run.json"))) {
            // A create interrupted before its first write: never acknowledged, nothing to keep.
            fs.rmSync(full, { recursive: true, force: true });
            interrupted.push(entry.name);
            continue;
          }
          const file = JSON.parse(fs.readFileSync(path.join(full, "run.json"), "utf8")) as RunFile;
          if (file.id !== entry.name) throw new Error(`run.json names run ${file.id}`);
          runs.push({ file, events: readJsonLines<RunEvent>(path.join(full, "events.jsonl")), legacy: false });
        } else if (entry.isFile() && entry.name.endsWith(".json") && isSafeId(entry.name.slice(0, -5))) {
          // Already migrated to our layout (a crash between migration and retiring the file).
          if (fs.existsSync(path.join(this.runsDir, entry.name.slice(0, -5), "run.json"))) {
            this.retireLegacy(entry.name.slice(0, -5));
            continue;
          }
          const state = JSON.parse(fs.readFileSync(full, "utf8")) as RunFile & { events?: RunEvent[] };
          if (state.id !== entry.name.slice(0, -5)) throw new Error("not a run state named after its file");
          const { events = [], ...rest } = state;
          runs.push({ file: rest as RunFile, events, legacy: true });
        } else if (entry.name.startsWith(".") && entry.name.endsWith(".tmp")) {
          fs.rmSync(full, { force: true });
        }
      } catch (e) {
        quarantined.push(this.quarantine(full, e));
      }
    }
    return { runs, quarantined, interrupted };
  }

  /** After a Rust-format `runs/<id>.json` has been written in our layout, keep it only as a backup. */
  retireLegacy(id: string): void {
    fs.renameSync(path.join(this.runsDir, `${id}.json`), path.join(this.runsDir, `${id}.json.migrated`));
  }

  private quarantine(full: string, why: unknown): string {
    ensureDir(this.quarantineDir);
    const dest = path.join(this.quarantineDir, `${path.basename(full)}.${Date.now()}`);
    fs.renameSync(full, dest);
    fs.writeFileSync(`${dest}.reason`, String(why instanceof Error ? why.message : why) + "\n");
    return path.relative(this.stateDir, dest);
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
