/**
 * ≥ 10,000 generated hostile requests (test/security/hostile-inputs.ts) against the
 * built daemon over TCP with a bearer token. Prints the status histogram, the 5xx
 * replies (goal 0), transport errors and whether the daemon survived.
 *
 *   npm run build && npx tsx bench/hostile.ts [--requests N] [--seed S] [--concurrency C]
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { generateHostile, type HostileRequest } from "../test/security/hostile-inputs.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const { values } = parseArgs({
  options: { requests: { type: "string", default: "10000" }, seed: { type: "string", default: "1" }, concurrency: { type: "string", default: "8" } },
});
const REQUESTS = Number(values.requests);
const SEED = Number(values.seed);
const CONCURRENCY = Number(values.concurrency);
const TOKEN = "hostile-bench-" + "5a".repeat(16);
const REPLY_TIMEOUT_MS = 30_000;

interface Outcome {
  status: number | null;
  error?: string;
  body?: string;
}

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Raw bytes on a fresh connection; the status from the reply's first line. */
function sendRaw(port: number, payload: Buffer | string): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let out = "";
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(o);
    };
    s.setEncoding("latin1");
    s.on("data", (d: string) => {
      out += d;
      if (out.length > 1 << 20) finish(parse(out));
    });
    s.on("close", () => finish(parse(out)));
    s.on("error", (e: NodeJS.ErrnoException) => finish(out ? parse(out) : { status: null, error: e.code ?? e.message }));
    s.setTimeout(REPLY_TIMEOUT_MS, () => finish({ status: null, error: "timeout" }));
    s.write(payload);
  });
  function parse(out: string): Outcome {
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(out);
    return m ? { status: Number(m[1]), body: out.split("\r\n\r\n").slice(1).join("\r\n\r\n").slice(0, 300) } : { status: null, error: out ? "unparsable reply" : "closed without reply" };
  }
}

function sendHttp(agent: http.Agent, port: number, r: Extract<HostileRequest, { kind: "http" }>): Promise<Outcome> {
  const body = r.body === undefined ? undefined : Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body);
  const headers: Record<string, string> = { ...r.headers, authorization: `Bearer ${TOKEN}` };
  if (body) headers["content-length"] = String(body.length);
  let req: http.ClientRequest;
  try {
    req = http.request({ host: "127.0.0.1", port, method: r.method, path: r.path, headers, agent });
  } catch {
    // Node's client refuses some paths/headers (raw non-ASCII, NUL): send the same bytes by hand.
    const head = `${r.method} ${r.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("")}Connection: close\r\n\r\n`;
    return sendRaw(port, body ? Buffer.concat([Buffer.from(head, "utf8"), body]) : head);
  }
  return new Promise((resolve) => {
    let done = false;
    const finish = (o: Outcome) => {
      if (!done) {
        done = true;
        resolve(o);
      }
    };
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.length < 64 && chunks.push(c));
      res.on("end", () => finish({ status: res.statusCode ?? null, body: Buffer.concat(chunks).toString("utf8").slice(0, 300) }));
      res.on("error", (e: NodeJS.ErrnoException) => finish({ status: res.statusCode ?? null, error: e.code }));
    });
    req.on("error", (e: NodeJS.ErrnoException) => finish({ status: null, error: e.code ?? e.message }));
    req.setTimeout(REPLY_TIMEOUT_MS, () => req.destroy(Object.assign(new Error("timeout"), { code: "timeout" })));
    req.end(body);
  });
}

async function main(): Promise<void> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-hostile-bench-"));
  const stateDir = path.join(home, "state");
  const tokenFile = path.join(home, "token");
  fs.writeFileSync(tokenFile, TOKEN + "\n", { mode: 0o600 });
  const spec = path.join(home, "good.yaml");
  fs.writeFileSync(spec, "api_version: v1\nkind: workflow\nname: good\nsandbox: {mode: mock}\nworkflow:\n  steps:\n    - name: main\n      run: {program: echo, args: [hi]}\n");

  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("VOIDBOX_")) delete env[k];
  const daemon = spawn(process.execPath, [path.join(ROOT, "dist/src/main.js"), "serve", "--listen", "tcp://127.0.0.1:0", "--state-dir", stateDir, "--token-file", tokenFile, "--accel", "tcg", "--log-level", "info"], {
    env: { ...env, XDG_CONFIG_HOME: path.join(home, "config"), XDG_RUNTIME_DIR: home },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let exited: string | null = null;
  daemon.on("exit", (code, signal) => (exited = `code ${code} signal ${signal}`));
  let stderr = "";
  daemon.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  try {
    await drive(daemon, () => exited, () => stderr, spec);
  } finally {
    if (!exited) {
      daemon.kill("SIGTERM");
      await new Promise<void>((resolve) => {
        const hard = setTimeout(() => daemon.kill("SIGKILL"), 20_000);
        daemon.on("exit", () => {
          clearTimeout(hard);
          resolve();
        });
      });
    }
    fs.rmSync(home, { recursive: true, force: true });
  }
}

async function drive(daemon: ChildProcess, exitedAs: () => string | null, stderrText: () => string, spec: string): Promise<void> {
  const port = await new Promise<number>((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("daemon not listening within 60 s")), 60_000);
    daemon.stdout!.on("data", (c: Buffer) => {
      buf += c.toString();
      const m = /"url":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
      if (buf.length > 1 << 16) buf = buf.slice(-4096);
    });
    daemon.on("exit", () => reject(new Error(`daemon exited before listening: ${stderrText()}`)));
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const known = await sendHttp(agent, port, { kind: "http", family: "setup", method: "POST", path: "/v1/runs", body: JSON.stringify({ file: spec, run_id: "known" }), headers: { "content-type": "application/json" } });
  if (known.status !== 200) throw new Error(`setup create failed: ${JSON.stringify(known)}`);
  const rssBefore = rss(daemon.pid!);

  const histogram = new Map<string, number>();
  const fivexx: string[] = [];
  const transport = new Map<string, number>();
  const byFamily = new Map<string, number>();
  let sent = 0;
  const t0 = Date.now();
  const gen = generateHostile(spec, REQUESTS, SEED);
  const worker = async () => {
    for (;;) {
      if (exitedAs()) return;
      const next = gen.next();
      if (next.done) return;
      const r = next.value;
      const o = r.kind === "raw" ? await sendRaw(port, r.payload) : await sendHttp(agent, port, r);
      sent++;
      byFamily.set(r.family, (byFamily.get(r.family) ?? 0) + 1);
      const key = o.status === null ? "no reply" : String(o.status);
      histogram.set(key, (histogram.get(key) ?? 0) + 1);
      if (o.error) transport.set(`${r.family}: ${o.error}`, (transport.get(`${r.family}: ${o.error}`) ?? 0) + 1);
      if (o.status !== null && o.status >= 500) fivexx.push(`${r.family}: ${r.kind === "http" ? `${r.method} ${r.path.slice(0, 80)}` : JSON.stringify(r.payload.slice(0, 80))} → ${o.status} ${o.body ?? ""}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (Date.now() - t0) / 1000;
  const exited = exitedAs();
  const health = exited ? null : await sendHttp(agent, port, { kind: "http", family: "health", method: "GET", path: "/v1/health", headers: {} });
  const rssAfter = exited ? 0 : rss(daemon.pid!);
  agent.destroy();

  const sorted = (m: Map<string, number>) => Object.fromEntries([...m].sort((a, b) => b[1] - a[1]));
  console.log(`hostile requests sent: ${sent} (seed ${SEED}, concurrency ${CONCURRENCY}, ${seconds.toFixed(1)} s)`);
  console.log(`families: ${JSON.stringify(sorted(byFamily))}`);
  console.log(`status histogram: ${JSON.stringify(sorted(histogram))}`);
  console.log(`5xx replies: ${fivexx.length}`);
  for (const f of fivexx.slice(0, 20)) console.log(`  ${f}`);
  console.log(`transport errors (no or partial reply): ${JSON.stringify(sorted(transport))}`);
  console.log(`daemon crashed: ${exited ? `yes (${exited})\n${stderrText().slice(-2000)}` : "no"}; /v1/health afterwards: ${health?.status ?? "-"}`);
  console.log(`daemon RSS: ${(rssBefore / 2 ** 20).toFixed(0)} MiB before, ${(rssAfter / 2 ** 20).toFixed(0)} MiB after`);
  process.exitCode = exited || fivexx.length ? 1 : 0;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
