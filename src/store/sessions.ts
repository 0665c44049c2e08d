import fs from "node:fs";
import path from "node:path";
import type { components } from "../../generated/api.js";
import { isSafeId } from "../ids.js";
import { ensureDir, readJsonLines } from "./fsutil.js";

export type SessionMessage = components["schemas"]["SessionMessage"];

/** Sessions: one append-only JSONL file per session id under `<stateDir>/sessions/`. */
export class SessionStore {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, "sessions");
    ensureDir(this.dir);
  }

  private file(id: string): string {
    if (!isSafeId(id)) throw new Error(`unsafe session id ${JSON.stringify(id)}`);
    return path.join(this.dir, `${id}.jsonl`);
  }

  list(id: string): SessionMessage[] {
    return readJsonLines<SessionMessage>(this.file(id));
  }

  append(id: string, msg: SessionMessage): void {
    const fd = fs.openSync(this.file(id), "a", 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(msg) + "\n");
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}
