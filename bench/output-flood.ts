/**
 * A guest printing 1,000,000 lines (`yes | head -n 1000000`, 2 MB of stdout) through the
 * built daemon with its default limits, measuring what it costs everyone else:
 *   - daemon RSS growth over its idle baseline (goal ≤ 64 MB),
 *   - GET /v1/health latency while the flood runs alone (p99 goal ≤ 100 ms), next to
 *     its latency on the idle daemon and with only mock runs (what the host's load and
 *     the mock runs cost by themselves),
 *   - a mock run's create → terminal latency during a second flood vs on the idle
 *     daemon (same bench run; ratio goal ≈ 1).
 * Needs `make build guest` (dist/ and build/guest). Prints a small table.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { freePort } from "./harness.js";
import { once } from "node:events";
import { findGuestImage, qemuAvailable } from "../src/sandbox/qemu/index.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const LINES = 1_000_000;
const MOCK_SAMPLES = 7;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);


function call(url: string, method = "GET", body?: unknown): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(url, { method, agent: false, headers: data ? { "content-type": "application/json", "content-length": data.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = text;
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${url}: no reply within 60 s`)));
    req.on("error", reject);
    req.end(data);
  });
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

async function startDaemon(stateDir: string): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(process.execPath, [path.join(ROOT, "dist/src/main.js"), "serve", "--listen", `tcp://127.0.0.1:${port}`, "--state-dir", stateDir, "--no-auth", "--log-level", "warn"], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "inherit"],
  });
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}`);
    try {
      if ((await call(`${url}/v1/health`)).status === 200) return { url, proc };
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill("SIGKILL");
  throw new Error("daemon did not answer /v1/health within 30 s");
}

async function waitTerminal(url: string, id: string, timeoutMs: number, pollMs = 10): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await call(`${url}/v1/runs/${id}`);
    if (r.status === 200 && TERMINAL.has(r.json.status)) return r.json;
    if (Date.now() > deadline) throw new Error(`run ${id} not terminal within ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, pollMs));
  }
}

/** Create → terminal of a small mock workflow, in ms. */
async function mockRun(url: string, file: string): Promise<number> {
  const t0 = performance.now();
  const r = await call(`${url}/v1/runs`, "POST", { file });
  if (r.status !== 200) throw new Error(`mock create: ${r.status} ${JSON.stringify(r.json)}`);
  const run = await waitTerminal(url, r.json.run_id, 60_000);
  if (run.status !== "succeeded") throw new Error(`mock run ${run.status}: ${run.error}`);
  return performance.now() - t0;
}

/** /health latencies sampled every 25 ms for `ms`, while `load` (if any) runs alongside. */
async function healthFor(url: string, ms: number, load?: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  const end = Date.now() + ms;
  const bg = load
    ? (async () => {
        while (Date.now() < end) await load();
      })()
    : Promise.resolve();
  while (Date.now() < end) {
    const t0 = performance.now();
    await call(`${url}/v1/health`);
    out.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 25));
  }
  await bg;
  return out;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
};
const mb = (b: number) => (b / 1024 / 1024).toFixed(1);

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(ROOT, "dist/src/main.js"))) throw new Error("dist/src/main.js missing: run `npm run build`");
  if (!qemuAvailable() || !findGuestImage(ROOT)) {
    console.log("output-flood: skipped (needs qemu-system-x86_64 and build/guest: make guest)");
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-flood-"));
  const flood = path.join(dir, "flood.json");
  fs.writeFileSync(
    flood,
    JSON.stringify({
      api_version: "v1",
      kind: "workflow",
      name: "flood",
      sandbox: { mode: "local", memory_mb: 256 },
      workflow: { steps: [{ name: "flood", run: { program: "sh", args: ["-c", `echo '{"status":"ok"}' > result.json; yes | head -n ${LINES}`] } }] },
    }),
  );
  const mock = path.join(dir, "mock.json");
  fs.writeFileSync(
    mock,
    JSON.stringify({
      api_version: "v1",
      kind: "workflow",
      name: "probe",
      sandbox: { mode: "mock" },
      workflow: {
        steps: [
          { name: "a", run: { program: "echo", args: ["hello"] } },
          { name: "b", depends_on: ["a"], run: { program: "tr", args: ["a-z", "A-Z"], stdin_from: "a" } },
        ],
      },
    }),
  );

  const { url, proc } = await startDaemon(path.join(dir, "state"));
  try {
    // Idle: warm up, then the baseline RSS and mock latency.
    for (let i = 0; i < 3; i++) await mockRun(url, mock);
    const idle: number[] = [];
    for (let i = 0; i < MOCK_SAMPLES; i++) idle.push(await mockRun(url, mock));
    const rss0 = rssBytes(proc.pid!);
    // /health with nothing running, and with only the mock runs: what the flood adds is the difference.
    const healthIdle = await healthFor(url, 3000);
    const healthMocks = await healthFor(url, 3000, () => mockRun(url, mock));

    const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(1)} ms, p99 ${pct(xs, 99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms (n=${xs.length})`;
    let peak = rss0;
    /** One flood run with /health probes and RSS samples alongside (and mock runs, if asked) until it ends. */
    const floodPhase = async (withMocks: boolean) => {
      const tFlood = performance.now();
      const created = await call(`${url}/v1/runs`, "POST", { file: flood });
      if (created.status !== 200) throw new Error(`flood create: ${created.status}`);
      const id = created.json.run_id as string;
      let done = false;
      const health: number[] = [];
      const busy: number[] = [];
      const slow: string[] = [];
      const sampler = (async () => {
        while (!done) {
          peak = Math.max(peak, rssBytes(proc.pid!));
          const t0 = performance.now();
          await call(`${url}/v1/health`);
          const ms = performance.now() - t0;
          health.push(ms);
          if (ms > 100) slow.push(`${ms.toFixed(0)} ms at +${((t0 - tFlood) / 1000).toFixed(2)} s`);
          await new Promise((r) => setTimeout(r, 25));
        }
      })();
      const mocks = (async () => {
        while (withMocks && !done) busy.push(await mockRun(url, mock));
      })();
      const run = await waitTerminal(url, id, 300_000, 50);
      const ms = performance.now() - tFlood;
      // A few more samples after the terminal event (the log.chunk burst happens then).
      for (let i = 0; i < 10; i++) {
        peak = Math.max(peak, rssBytes(proc.pid!));
        await new Promise((r) => setTimeout(r, 50));
      }
      done = true;
      await Promise.all([sampler, mocks]);
      return { run, ms, health, busy, slow };
    };
    const alone = await floodPhase(false);
    const mixed = await floodPhase(true);
    const { run, ms: floodMs, busy } = mixed;

    const trunc = run.events.find((e: any) => e.event_type === "stage.output_truncated");
    const chunks = run.events.filter((e: any) => e.event_type === "log.chunk").length;
    const idleMed = pct(idle, 50);
    const busyMed = pct(busy, 50);
    const rows: Array<[string, string, string]> = [
      ["flood runs", `${alone.run.status} in ${(alone.ms / 1000).toFixed(1)} s (alone), ${run.status} in ${(floodMs / 1000).toFixed(1)} s (+ mocks)`, ""],
      ["stdout kept / written", trunc ? `${trunc.payload.kept_bytes} / ${trunc.payload.total_bytes} B` : "not truncated", ""],
      ["log.chunk events", String(chunks), ""],
      ["daemon RSS idle → peak", `${mb(rss0)} → ${mb(peak)} MB`, ""],
      ["daemon RSS growth", `${mb(peak - rss0)} MB`, "≤ 64 MB"],
      ["/health idle", fmt(healthIdle), ""],
      ["/health with mock runs only", fmt(healthMocks), ""],
      ["/health during flood alone", fmt(alone.health), "p99 ≤ 100 ms"],
      ["/health during flood + mocks", fmt(mixed.health), ""],
      ["mock run idle (median)", `${idleMed.toFixed(1)} ms (n=${idle.length})`, ""],
      ["mock run during flood (median)", `${busyMed.toFixed(1)} ms (n=${busy.length})`, ""],
      ["mock latency ratio", (busyMed / idleMed).toFixed(2), "≈ 1"],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    const v = Math.max(...rows.map((r) => r[1].length));
    console.log(`output-flood: a guest printing ${LINES.toLocaleString("en")} lines, default limits`);
    for (const [k, val, goal] of rows) console.log(`  ${k.padEnd(w)}  ${val.padEnd(v)}  ${goal}`);
    for (const [what, ph] of [["alone", alone], ["+ mocks", mixed]] as const)
      if (ph.slow.length) console.log(`  /health over 100 ms, flood ${what} (since its create; it ended at +${(ph.ms / 1000).toFixed(2)} s): ${ph.slow.join(", ")}`);
  } finally {
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    if (proc.exitCode === null) await once(proc, "exit");
    clearTimeout(timer);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
