// The three things the contract suite can talk to:
//   (a) inprocess — createDaemon() from src/server.ts in this test process;
//   (b) process   — `node <package.json bin.voidbox> serve` (dist/src/main.js; needs `npm run build`);
//   (c) prism     — `prism mock openapi.yaml`, i.e. the spec itself answering with examples;
//   (d) url       — any running implementation at VOIDBOX_CONFORMANCE_URL (`make conformance`).
// Each local one gets its own temp state dir; process.env is only read, never written.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";

import { REPO_ROOT, startDaemon, tmpDir } from "./daemon.js";

export type TargetKind = "inprocess" | "process" | "prism" | "url";

export interface Target {
  name: string;
  kind: TargetKind;
  /** Base URL without trailing slash, e.g. http://127.0.0.1:41234 */
  url: string;
  /** State dir of a real daemon (undefined for prism and url). */
  stateDir?: string;
  /** Bearer token the target requires (undefined: it requires none). */
  token?: string;
  close(): Promise<void>;
}

export interface TargetFactory {
  name: string;
  kind: TargetKind;
  /** The target requires a bearer token (so a request without one is 401, not served). */
  requiresToken?: boolean;
  /** How run specs reach it: paths on this host's filesystem (default), or inline. */
  fixtures?: "file" | "inline";
  start(): Promise<Target>;
}

export const makeStateDir = (): string => tmpDir("vbx-");

/** The daemon in this process, without auth (as the contract suite's servers run). */
export async function startInProcess(): Promise<Target> {
  const stateDir = makeStateDir();
  const { d: daemon, url } = await startDaemon(stateDir, { auth: null, vm: undefined });
  return {
    name: "in-process server",
    kind: "inprocess",
    url: url.replace(/\/$/, ""),
    stateDir,
    async close() {
      await daemon.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Keep the last lines of a child's output for error messages (and keep the pipes drained). */
function captureOutput(child: ChildProcess, onLine?: (line: string) => void): () => string {
  const lines: string[] = [];
  const feed = (stream: NodeJS.ReadableStream | null, tag: string) => {
    if (!stream) return;
    let buf = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(`[${tag}] ${line}`);
        if (lines.length > 200) lines.shift();
        onLine?.(line);
      }
    });
  };
  feed(child.stdout, "stdout");
  feed(child.stderr, "stderr");
  return () => lines.join("\n");
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Spawn a child and wait until `ready(line)` returns a URL, or fail after `timeoutMs`
 * (or when the child exits first) with its captured output.
 */
function spawnUntilReady(
  what: string,
  command: string,
  args: string[],
  ready: (line: string) => string | undefined,
  timeoutMs: number,
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(command, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let settled = false;
    const output = captureOutput(child, (line) => {
      if (settled) return;
      const url = ready(line);
      if (url) {
        settled = true;
        clearTimeout(timer);
        resolve({ child, url });
      }
    });
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void stopChild(child, 1000).then(() => reject(new Error(`${what}: ${why}\n--- output ---\n${output()}`)));
    };
    const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
    child.once("error", (err) => fail(`spawn failed: ${err.message}`));
    child.once("exit", (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
  });
}

/** The CLI entry the package declares (`bin.voidbox` in package.json, e.g. dist/src/main.js). */
function cliEntry(): string {
  const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as {
    bin?: string | Record<string, string>;
  };
  const rel = typeof pkg.bin === "string" ? pkg.bin : (pkg.bin?.voidbox ?? "bin/voidbox.js");
  return path.join(REPO_ROOT, rel);
}

async function startProcess(bin = cliEntry()): Promise<Target> {
  if (!existsSync(bin)) throw new Error(`${bin} does not exist: run \`npm run build\` first`);
  if (!existsSync(path.join(REPO_ROOT, "dist"))) throw new Error("dist/ does not exist: run `npm run build` first");
  const stateDir = makeStateDir();
  const { child, url } = await spawnUntilReady(
    "voidbox serve",
    process.execPath,
    [bin, "serve", "--listen", "tcp://127.0.0.1:0", "--state-dir", stateDir, "--no-auth"],
    (line) => {
      // pino JSON line: {"level":30,...,"msg":"listening","url":"http://127.0.0.1:PORT"}
      if (!line.startsWith("{")) return undefined;
      try {
        const rec = JSON.parse(line) as { msg?: unknown; url?: unknown };
        return rec.msg === "listening" && typeof rec.url === "string" && rec.url.startsWith("http")
          ? rec.url
          : undefined;
      } catch {
        return undefined;
      }
    },
    15_000,
  );
  return {
    name: "separate process",
    kind: "process",
    url: url.replace(/\/$/, ""),
    stateDir,
    async close() {
      await stopChild(child);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Prism (`mock` or `proxy` mode) on a free loopback port; `args` come before the port flags. */
async function startPrismOn(name: string, args: string[]): Promise<Target> {
  const prism = path.join(REPO_ROOT, "node_modules", ".bin", "prism");
  let lastError: unknown;
  // The free port can be taken between probing and Prism binding it: retry a few times.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      const { child, url } = await spawnUntilReady(
        name.toLowerCase(),
        prism,
        [...args, "-p", String(port), "-h", "127.0.0.1"],
        (line) => (line.includes("Prism is listening") ? `http://127.0.0.1:${port}` : undefined),
        30_000,
      );
      return {
        name,
        kind: "prism",
        url,
        async close() {
          await stopChild(child);
        },
      };
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

function startPrism(): Promise<Target> {
  return startPrismOn("Prism mock", ["mock", "openapi.yaml"]);
}

/**
 * Prism's validating proxy (`prism proxy openapi.yaml <upstream> --errors`) in front of a
 * running daemon: it forwards what the spec allows and answers a request or reply the spec
 * does not allow with its own error (RFC 7807 problem+json) instead.
 */
export function startPrismProxy(upstream: string, extraArgs: string[] = []): Promise<Target> {
  return startPrismOn("Prism proxy", ["proxy", "openapi.yaml", upstream, "--errors", ...extraArgs]);
}

const ALL_TARGETS: TargetFactory[] = [
  { name: "in-process server", kind: "inprocess", start: startInProcess },
  { name: "separate process", kind: "process", start: () => startProcess() },
  { name: "Prism mock", kind: "prism", start: startPrism },
];

/**
 * A running implementation given by URL (`make conformance`). vitest forces BASE_URL to "/",
 * hence VOIDBOX_CONFORMANCE_URL. A token comes from VOIDBOX_CONFORMANCE_TOKEN or the file
 * VOIDBOX_CONFORMANCE_TOKEN_FILE; VOIDBOX_CONFORMANCE_MOCK=1 says the target answers from the
 * spec alone (e.g. `make mock`), so the suite applies the mock relaxations (R1–R6).
 */
export function urlTarget(env: NodeJS.ProcessEnv = process.env): TargetFactory | undefined {
  const raw = env.VOIDBOX_CONFORMANCE_URL?.trim();
  if (!raw) return undefined;
  const url = new URL(raw);
  if (url.protocol !== "http:") throw new Error(`VOIDBOX_CONFORMANCE_URL must be http://HOST:PORT, got ${raw}`);
  const tokenFile = env.VOIDBOX_CONFORMANCE_TOKEN_FILE?.trim();
  const token = env.VOIDBOX_CONFORMANCE_TOKEN?.trim() || (tokenFile ? readFileSync(tokenFile, "utf8").trim() : undefined) || undefined;
  const mock = /^(1|true|yes)$/i.test(env.VOIDBOX_CONFORMANCE_MOCK?.trim() ?? "");
  const kind: TargetKind = mock ? "prism" : "url";
  const name = `${mock ? "mock" : "implementation"} at ${url.origin}`;
  return {
    name,
    kind,
    requiresToken: token !== undefined,
    // It may run on another host: run specs go inline.
    fixtures: "inline",
    async start() {
      return { name, kind, url: url.origin, token, async close() {} };
    },
  };
}

/**
 * Optional read-only filter: VOIDBOX_TEST_TARGETS=inprocess,prism runs a subset
 * (e.g. while the server does not build yet). Default: all three; only the URL target when
 * VOIDBOX_CONFORMANCE_URL is set.
 */
export function selectedTargets(): TargetFactory[] {
  const remote = urlTarget();
  if (remote) return [remote];
  const filter = process.env.VOIDBOX_TEST_TARGETS?.split(",").map((s) => s.trim()).filter(Boolean);
  return filter && filter.length > 0 ? ALL_TARGETS.filter((t) => filter.includes(t.kind)) : ALL_TARGETS;
}
