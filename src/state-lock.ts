/**
 * One daemon per state dir. Two daemons on one state dir would each treat the other's
 * micro-VMs as leftovers (and kill them), accept the same run ids and append to the
 * same event logs.
 *
 * The lock is a Linux abstract Unix socket named after the state dir's device and
 * inode, bound by the holder. Why this and not a lock file:
 *  - the kernel releases the name when the holder dies, even after kill -9, so there is
 *    no stale lock to detect and no takeover protocol (a pid + start-time file taken
 *    with O_EXCL needs one, and two daemons starting after a crash can both decide the
 *    old lock is stale and both take it over);
 *  - bind() is atomic: of two daemons starting at once exactly one gets the name, in
 *    one process as well as across processes;
 *  - dev:inode names the directory itself, whatever path (symlink, bind mount,
 *    relative path) each daemon was given.
 * Limits: the abstract namespace belongs to the network namespace, so daemons in
 * different network namespaces sharing one state dir are not kept apart; and any local
 * user can bind the name first, which makes the daemon refuse to start (never run twice).
 *
 * `daemon.lock` (JSON, next to the runs) only tells a refused daemon who holds the
 * lock: pid, start time and listen URLs. It is never what decides.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ConfigError } from "./config.js";

const LOCK_INFO_FILE = "daemon.lock";

interface LockHolder {
  pid: number;
  started_at: string;
  urls: string[];
  /** Tells this daemon's info file apart from another in-process daemon's (same pid). */
  nonce: string;
}

class StateDirLockedError extends ConfigError {
  override name = "StateDirLockedError";
  constructor(
    readonly stateDir: string,
    readonly holder: LockHolder | null,
  ) {
    const who = holder
      ? `voidbox daemon pid ${holder.pid} (started ${holder.started_at}${holder.urls.length ? `, listening on ${holder.urls.join(", ")}` : ""})`
      : "another process (no daemon.lock info: not a voidbox daemon, or it is still starting)";
    super(`--state-dir ${stateDir} is in use by ${who}; stop it first or give this daemon another --state-dir`);
  }
}

export interface StateLock {
  readonly name: string;
  /** Records the listen URLs in daemon.lock (for the message a refused daemon prints). */
  setUrls(urls: string[]): void;
  /** Unbinds the name and removes daemon.lock if it is still ours. Idempotent. */
  release(): Promise<void>;
}

function lockName(stateDir: string): string {
  const st = fs.statSync(stateDir);
  return `\0voidbox-state-dir:${st.dev}:${st.ino}`;
}

function readHolder(file: string): LockHolder | null {
  try {
    const v = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<LockHolder>;
    if (!Number.isInteger(v.pid) || typeof v.started_at !== "string") return null;
    return { pid: v.pid!, started_at: v.started_at, urls: Array.isArray(v.urls) ? v.urls.filter((u): u is string => typeof u === "string") : [], nonce: String(v.nonce ?? "") };
  } catch {
    return null;
  }
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Takes the state dir's lock, or throws StateDirLockedError naming the holder. */
export async function lockStateDir(stateDir: string): Promise<StateLock> {
  const name = lockName(stateDir);
  const file = path.join(stateDir, LOCK_INFO_FILE);
  const server = net.createServer((s) => s.destroy());
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ path: name, exclusive: true }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
    // A holder that has just bound the name writes daemon.lock right after (replacing a
    // dead predecessor's): give it a moment.
    const live = () => {
      const h = readHolder(file);
      return h && pidExists(h.pid) ? h : null;
    };
    let holder = live();
    for (let i = 0; !holder && i < 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
      holder = live();
    }
    throw new StateDirLockedError(stateDir, holder);
  }
  // The lock must not keep a process alive on its own (the listeners do that).
  server.unref();
  server.on("error", () => undefined);

  const me: LockHolder = { pid: process.pid, started_at: new Date().toISOString(), urls: [], nonce: randomBytes(8).toString("hex") };
  const write = () => {
    // Informational only: a failure to write it must not stop the daemon.
    const tmp = `${file}.${me.nonce}.tmp`;
    try {
      fs.writeFileSync(tmp, JSON.stringify(me) + "\n", { mode: 0o600 });
      fs.renameSync(tmp, file);
    } catch {
      try {
        fs.rmSync(tmp, { force: true });
      } catch {
        // nothing more to do
      }
    }
  };
  write();
  let released = false;
  return {
    name,
    setUrls(urls) {
      me.urls = urls;
      if (!released) write();
    },
    async release() {
      if (released) return;
      released = true;
      if (readHolder(file)?.nonce === me.nonce) fs.rmSync(file, { force: true });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
