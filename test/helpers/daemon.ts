// Starting daemons for tests, and their temp dirs. Two ways, one place:
//   - in this process: startDaemon(stateDir, opts) → createDaemon() listening on loopback TCP;
//   - as a child: startDaemonProcess({args, env}) → `node dist/src/main.js serve …` (needs
//     `npm run build`), with its log lines, its listening URLs, and bounded stop/kill.
// Nothing here writes the test process's environment; a child's env is a copy.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";
import type { Daemon, DaemonOptions } from "../../src/server.js";
import { waitFor, withTimeout } from "./wait.js";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const MAIN_JS = path.join(REPO_ROOT, "dist", "src", "main.js");

/** A fresh temp dir (a test's state dir, spec dir, …); the test removes it. */
export function tmpDir(prefix = "vbx-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// ── in this process ────────────────────────────────────────────────────────────────────

export interface TestDaemon {
  d: Daemon;
  url: string;
  stateDir: string;
}

/** createDaemon() on `stateDir` (no micro-VMs unless `opts.vm` says so), listening on `address` (default: a free loopback port). */
export async function startDaemon(stateDir: string, opts: Partial<DaemonOptions> = {}, address = "tcp://127.0.0.1:0"): Promise<TestDaemon> {
  // Loaded on first use: a conformance run against another implementation never loads the daemon.
  const { createDaemon } = await import("../../src/server.js");
  const d = await createDaemon({ stateDir, vm: false, ...opts });
  const { url } = await d.listen(address);
  return { d, url, stateDir };
}

/**
 * A starter of in-process daemons that are all closed after the calling test file: call it
 * once at the file's top level (it registers that afterAll).
 */
export function daemonsOfFile(): (stateDir?: string, opts?: Partial<DaemonOptions>) => Promise<TestDaemon> {
  const open: TestDaemon[] = [];
  afterAll(async () => {
    for (const t of open.splice(0)) await t.d.close();
  });
  return async (stateDir = tmpDir(), opts = {}) => {
    const t = await startDaemon(stateDir, opts);
    open.push(t);
    return t;
  };
}

// ── as a child process ─────────────────────────────────────────────────────────────────

/** A child env: the test's env plus overrides, with every voidbox variable that could leak in removed. */
export function childEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("VOIDBOX_")) delete env[k];
  return { ...env, XDG_CONFIG_HOME: path.join(home, "config"), XDG_RUNTIME_DIR: path.join(home, "run"), ...extra };
}

interface LogLine {
  raw: string;
  rec: Record<string, unknown> | null;
}

export interface DaemonProc {
  child: ChildProcess;
  pid: number;
  /** URLs from the "listening" log lines, in listener order. */
  urls: string[];
  lines: LogLine[];
  stderr: () => string;
  output: () => string;
  /** Resolves with the exit code/signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface SpawnOptions {
  args: string[];
  env: NodeJS.ProcessEnv;
  /** A command that execs the daemon (e.g. ["prlimit", "--nofile=128:128", "--"]); the pid stays the daemon's. */
  wrap?: string[];
}

/** Spawns `node dist/src/main.js serve ...args` and returns as soon as it is spawned. */
export function spawnDaemon(opts: SpawnOptions): DaemonProc {
  if (!fs.existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} does not exist: run \`npm run build\` first`);
  const argv = [process.execPath, MAIN_JS, "serve", ...opts.args];
  if (opts.wrap?.length) argv.unshift(...opts.wrap);
  const child = spawn(argv[0]!, argv.slice(1), { cwd: REPO_ROOT, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
  const lines: LogLine[] = [];
  const urls: string[] = [];
  let stderr = "";
  let buf = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let rec: Record<string, unknown> | null = null;
      try {
        rec = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        rec = null;
      }
      lines.push({ raw, rec });
      if (rec?.msg === "listening" && typeof rec.url === "string") urls.push(rec.url);
    }
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  return {
    child,
    pid: child.pid!,
    urls,
    lines,
    stderr: () => stderr,
    output: () => lines.map((l) => l.raw).join("\n") + "\n[stderr]\n" + stderr,
    exited,
  };
}

/** Waits until the daemon logged `count` listening lines (fails if it exits first or the deadline passes). */
export async function waitListening(d: DaemonProc, count: number, timeoutMs = 30_000): Promise<string[]> {
  let exitedEarly = false;
  void d.exited.then(() => (exitedEarly = true));
  await waitFor(() => d.urls.length >= count || exitedEarly, () => `daemon not listening within ${timeoutMs} ms\n${d.output()}`, timeoutMs);
  if (d.urls.length < count) throw new Error(`daemon exited before listening\n${d.output()}`);
  return d.urls.slice(0, count);
}

/** spawnDaemon, then wait for its `listeners` (default 1) listening lines; killed if it does not get there. */
export async function startDaemonProcess(opts: SpawnOptions & { listeners?: number }): Promise<DaemonProc> {
  const d = spawnDaemon(opts);
  try {
    await waitListening(d, opts.listeners ?? 1);
  } catch (e) {
    await killHard(d);
    throw e;
  }
  return d;
}

export function alive(d: DaemonProc): boolean {
  return d.child.exitCode === null && d.child.signalCode === null;
}

/** SIGKILL, and wait (bounded) until the process is gone. */
export async function killHard(d: DaemonProc, timeoutMs = 10_000): Promise<void> {
  if (!alive(d)) return;
  d.child.kill("SIGKILL");
  await withTimeout(d.exited, timeoutMs, `pid ${d.pid} did not die after SIGKILL`);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with how it ended. */
export async function stopDaemon(d: DaemonProc, graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (!alive(d)) return d.exited;
  d.child.kill("SIGTERM");
  const timer = setTimeout(() => {
    if (alive(d)) d.child.kill("SIGKILL");
  }, graceMs);
  try {
    return await d.exited;
  } finally {
    clearTimeout(timer);
  }
}
