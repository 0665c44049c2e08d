// Shared helpers for the reliability and security suites: spawn the built daemon
// (dist/src/main.js) as a child process, talk raw HTTP to it over TCP or a Unix
// socket, and wait for conditions with deadlines (never sleeps as synchronisation).
// Nothing here reads or writes the test process's environment except to copy it
// into a child's env.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gateReply, skipReply } from "../helpers/conformance.js";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const MAIN_JS = path.join(REPO_ROOT, "dist", "src", "main.js");

export function tempDir(prefix = "vbx-rel-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A child env: the test's env plus overrides, with every voidbox variable that could leak in removed. */
export function childEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("VOIDBOX_")) delete env[k];
  return { ...env, XDG_CONFIG_HOME: path.join(home, "config"), XDG_RUNTIME_DIR: path.join(home, "run"), ...extra };
}

export interface LogLine {
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
  const child = spawn(argv[0], argv.slice(1), { cwd: REPO_ROOT, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
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
  await waitFor(() => d.urls.length >= count || exitedEarly, timeoutMs, () => `daemon not listening within ${timeoutMs} ms\n${d.output()}`);
  if (d.urls.length < count) throw new Error(`daemon exited before listening\n${d.output()}`);
  return d.urls.slice(0, count);
}

export async function startDaemon(opts: SpawnOptions & { listeners?: number }): Promise<DaemonProc> {
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

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` (sync or async) until true, failing after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(typeof what === "string" ? what : what());
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: unknown;
}

export interface RequestOptions {
  method?: string;
  /** JSON-serialised unless a Buffer/string is given with `raw: true`. */
  body?: unknown;
  raw?: boolean;
  headers?: Record<string, string>;
  token?: string;
  timeoutMs?: number;
  /** "strict" (default): the reply must pass the conformance gate (openapi.yaml); "none" for replies a test inspects itself. */
  conformance?: "strict" | "none";
}

/** One HTTP request on a fresh connection; `base` is http://host:port or unix:///path. The reply passes the conformance gate. */
export function request(base: string, pathname: string, o: RequestOptions = {}): Promise<Reply> {
  const method = o.method ?? (o.body === undefined ? "GET" : "POST");
  let payload: Buffer | undefined;
  if (o.body !== undefined) payload = o.raw ? (Buffer.isBuffer(o.body) ? o.body : Buffer.from(String(o.body))) : Buffer.from(JSON.stringify(o.body));
  const headers: Record<string, string> = { ...(payload && !o.raw ? { "content-type": "application/json" } : {}), ...(o.headers ?? {}) };
  if (payload) headers["content-length"] = String(payload.length);
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  const target: http.RequestOptions = base.startsWith("unix://")
    ? { socketPath: base.slice("unix://".length) }
    : (() => {
        const u = new URL(base);
        return { host: u.hostname, port: Number(u.port) };
      })();
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, method, path: pathname, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        try {
          if (o.conformance === "none") skipReply();
          else gateReply({ method, path: pathname, status: res.statusCode ?? 0, headers: res.headers, body });
        } catch (err) {
          return reject(err);
        }
        const text = body.toString("utf8");
        let json: unknown = undefined;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on("error", reject);
    req.setTimeout(o.timeoutMs ?? 20_000, () => req.destroy(new Error(`${method} ${pathname}: no reply within ${o.timeoutMs ?? 20_000} ms`)));
    if (payload) req.write(payload);
    req.end();
  });
}

export interface ApiErrorBody {
  code: string;
  message: string;
  retryable: boolean;
}

export function isApiError(v: unknown): v is ApiErrorBody {
  if (!v || typeof v !== "object") return false;
  const o = v as Record<string, unknown>;
  return typeof o.code === "string" && /^[A-Z][A-Z0-9_]*$/.test(o.code) && typeof o.message === "string" && typeof o.retryable === "boolean";
}

export function writeSpec(dir: string, name: string, steps: Array<{ name: string; program: string; args: string[]; depends_on?: string[] }>): string {
  const file = path.join(dir, name);
  const lines = ["api_version: v1", "kind: workflow", `name: ${name.replace(/\W/g, "-")}`, "sandbox: {mode: mock}", "workflow:", "  steps:"];
  for (const s of steps) {
    lines.push(`    - name: ${s.name}`);
    if (s.depends_on) lines.push(`      depends_on: [${s.depends_on.join(", ")}]`);
    lines.push(`      run: {program: ${s.program}, args: ${JSON.stringify(s.args)}}`);
  }
  fs.writeFileSync(file, lines.join("\n") + "\n");
  return file;
}

export interface RunEventLike {
  event_id: string;
  event_type: string;
  seq: number;
}
export interface RunStateLike {
  id: string;
  status: string;
  error: string | null;
  terminal_reason: string | null;
  terminal_event_id: string | null;
  events: RunEventLike[];
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
