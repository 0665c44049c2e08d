import fs from "node:fs";
import path from "node:path";
import type { components } from "../../generated/api.js";
import { isSafeId } from "../ids.js";
import { appendAtomically, ensureDir, readJsonLinesLenient, wholeLinesLength, writeFileAtomic } from "./fsutil.js";
import type { StateSchemas } from "./schemas.js";
import type { StorageGuard } from "./storage.js";

export type SessionMessage = components["schemas"]["SessionMessage"];

export interface SessionStoreOptions {
  schemas?: StateSchemas;
  /** Admission (free-space floor, known storage faults) and fault reporting. */
  storage?: StorageGuard;
  /** Where damaged lines are reported (relative paths of their quarantine files). */
  onQuarantine?: (file: string, reason: string) => void;
}

/**
 * Sessions: one append-only JSONL file per session id under `<stateDir>/sessions/`.
 * An append is acknowledged only once its whole line is on disk and fsynced; a failed
 * append is cut off again, so the log always ends with a whole line. A log damaged
 * anyway (edited by hand, a disk error) is repaired on read: lines that are not a
 * SessionMessage are moved to `quarantine/` and reported; the rest is served.
 */
export class SessionStore {
  private readonly dir: string;
  private readonly quarantineDir: string;

  constructor(
    private readonly stateDir: string,
    private readonly opts: SessionStoreOptions = {},
  ) {
    this.dir = path.join(stateDir, "sessions");
    this.quarantineDir = path.join(stateDir, "quarantine");
  }

  private file(id: string): string {
    if (!isSafeId(id)) throw new Error(`unsafe session id ${JSON.stringify(id)}`);
    return path.join(this.dir, `${id}.jsonl`);
  }

  list(id: string): SessionMessage[] {
    const file = this.file(id);
    const log = readJsonLinesLenient(file);
    const good: SessionMessage[] = [];
    const bad: string[] = [...log.badText];
    const why: string[] = log.badLines.map((n) => `line ${n} is not valid JSON`);
    for (const v of log.values) {
      const problem = this.opts.schemas?.sessionMessage(v) ?? null;
      if (problem) {
        bad.push(JSON.stringify(v));
        why.push(`a line ${problem}`);
      } else good.push(v as SessionMessage);
    }
    if (bad.length) this.repair(id, file, good, bad, why);
    return good;
  }

  /** Moves the damaged lines aside and rewrites the log without them (if the state dir can be written now). */
  private repair(id: string, file: string, good: SessionMessage[], bad: string[], why: string[]): void {
    const dest = path.join(this.quarantineDir, `session-${id}.${Date.now()}.jsonl`);
    try {
      ensureDir(this.quarantineDir);
      writeFileAtomic(dest, bad.map((l) => l + "\n").join(""));
      writeFileAtomic(`${dest}.reason`, `${path.relative(this.stateDir, file)}: ${why.join("; ")}\n`);
      writeFileAtomic(file, good.map((m) => JSON.stringify(m) + "\n").join(""));
    } catch (e) {
      this.opts.storage?.fault(e);
      return; // served without the damaged lines; repaired on a later read
    }
    this.opts.onQuarantine?.(path.relative(this.stateDir, dest), why.join("; "));
  }

  append(id: string, msg: SessionMessage): void {
    const file = this.file(id);
    this.opts.storage?.admit("session messages");
    try {
      ensureDir(this.dir);
      const fd = fs.openSync(file, "a+", 0o600);
      try {
        // A torn tail (a crash mid-append) is not part of the log: continue after the last whole line.
        const valid = wholeLinesLength(fd);
        appendAtomically(fd, valid, JSON.stringify(msg) + "\n", `sessions/${id}.jsonl`);
        try {
          fs.fsyncSync(fd);
        } catch (e) {
          fs.ftruncateSync(fd, valid);
          throw e;
        }
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      throw this.opts.storage ? this.opts.storage.fault(e) : e;
    }
  }
}
