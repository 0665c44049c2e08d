/**
 * A daemon with a long history: 10,000 terminal runs of 20 events each on disk.
 *
 *   npm run build && [nice -n -15] npx tsx bench/history.ts [--runs N] [--events N] [--rounds N] [--cpu-prof DIR] [--keep]
 *
 * On a shared host, `nice -n -15` (root) puts the bench and its daemons ahead of the rest.
 *
 * Measures, each daemon started as operators start it (`serve`, log level warn, no guest
 * probe: it is pointed at a kernel that does not exist, so only the state dir is measured):
 *   - start → first /v1/health answer on an empty state dir (p50 of --rounds);
 *   - the same on the history as an older daemon left it (no summary.json: every run is
 *     read once and its summary derived), and again once the summaries are there;
 *   - the daemon's RSS after start and after the full listing below;
 *   - `GET /v1/runs?limit=100` walking every page (latency of each);
 *   - `GET /v1/runs` without parameters (every run with every event: the old answer).
 * Writes build/bench/history.json. `--cpu-prof DIR` profiles the start with summaries.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { atMost, percentile as pct, writeFigures, type Figure } from "./figures.js";
import { freePort } from "./harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const mainJs = path.join(root, "dist", "src", "main.js");

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : def;
}

const RUNS = Number(arg("runs", "10000"));
const EVENTS = Number(arg("events", "20"));
const ROUNDS = Number(arg("rounds", "5"));

const p50 = (xs: number[]) => pct(xs, 50);

const eventId = (run: number, i: number) => `${run.toString(16).padStart(8, "0")}-0000-7000-8000-${i.toString(16).padStart(12, "0")}`;

/** A terminal run as the daemon writes it (run.json + events.jsonl), without a summary.json. */
function writeHistory(stateDir: string): void {
  const runsDir = path.join(stateDir, "runs");
  fs.mkdirSync(runsDir, { recursive: true });
  const t0 = Date.parse("2026-01-01T00:00:00.000Z");
  for (let r = 0; r < RUNS; r++) {
    const id = `hist-${String(r).padStart(6, "0")}`;
    const started = t0 + r * 1000;
    const events: string[] = [];
    for (let i = 0; i < EVENTS; i++) {
      const ts = started + i * 10;
      const last = i === EVENTS - 1;
      const [type, v2] = i === 0 ? ["run.started", "RunStarted"] : last ? ["run.finished", "RunCompleted"] : ["stage.output", "StageOutput"];
      const e: Record<string, unknown> = {
        ts_ms: ts,
        level: "info",
        event_type: type,
        message: last ? "run succeeded" : `line ${i} of the step's output`,
        run_id: id,
        event_id: eventId(r, i),
        seq: i,
        attempt_id: 1,
        timestamp: new Date(ts).toISOString(),
        event_type_v2: v2,
        payload: type === "stage.output" ? { stream: "stdout", offset: i * 30, bytes: 30, encoding: "utf8", data: `output line ${i} of run ${r}\n`, stage_attempt: 1 } : last ? { exit_code: 0 } : null,
      };
      if (type === "stage.output") Object.assign(e, { stage_name: "main", stream: "stdout" });
      events.push(JSON.stringify(e));
    }
    const finished = new Date(started + (EVENTS - 1) * 10).toISOString();
    const file = {
      id,
      status: "succeeded",
      file: "examples/hello.yaml",
      report: { name: "hello", kind: "workflow", success: true, output: "hello\n", stages: 1, total_cost_usd: 0, input_tokens: 0, output_tokens: 0 },
      error: null,
      attempt_id: 1,
      started_at: new Date(started).toISOString(),
      updated_at: finished,
      finished_at: finished,
      terminal_reason: null,
      terminal_event_id: eventId(r, EVENTS - 1),
      exit_code: 0,
      policy: null,
      sandbox_mode: "mock",
      stages: [{ name: "main", depends_on: [], group: null, status: "succeeded", attempt: 1, started_at: started, finished_at: started + 100, exit_code: 0 }],
      artifact_publication: { status: "not_started", manifest: [] },
    };
    const dir = path.join(runsDir, id);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(file, null, 1));
    fs.writeFileSync(path.join(dir, "events.jsonl"), events.map((l) => l + "\n").join(""));
  }
}


function get(url: string, timeoutMs = 60_000): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout: ${url}`)));
  });
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Daemon {
  url: string;
  proc: ChildProcess;
  healthMs: number;
  stop: () => Promise<void>;
}

async function start(stateDir: string, extraNodeArgs: string[] = []): Promise<Daemon> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const t0 = performance.now();
  const proc = spawn(process.execPath, [...extraNodeArgs, mainJs, "serve", "--listen", `tcp://127.0.0.1:${port}`, "--state-dir", stateDir, "--no-auth", "--kernel", "/nonexistent/vmlinuz", "--initramfs", "/nonexistent/initramfs", "--log-level", "error"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = once(proc, "exit");
  const stop = async () => {
    if (proc.exitCode !== null) return;
    proc.kill("SIGTERM");
    const killer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(killer);
  };
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error("no /v1/health within 120 s");
    }
    try {
      if ((await get(`${url}/v1/health`, 2000)).status === 200) return { url, proc, healthMs: performance.now() - t0, stop };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Until every run directory has its summary.json (written in the background after a start on an older state dir). */
async function summariesWritten(stateDir: string): Promise<void> {
  const runsDir = path.join(stateDir, "runs");
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const missing = fs.readdirSync(runsDir).filter((d) => !fs.existsSync(path.join(runsDir, d, "summary.json"))).length;
    if (!missing) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("summaries not written within 120 s");
}

async function main(): Promise<void> {
  if (!fs.existsSync(mainJs)) throw new Error("run `npm run build` first");
  console.log(`host: ${os.cpus().length} CPUs, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}, node ${process.version}; ${RUNS} runs × ${EVENTS} events`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-history-"));
  const daemons: Daemon[] = [];
  const figures: Figure[] = [];
  try {
    const empty: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const d = await start(path.join(tmp, `empty-${i}`));
      empty.push(d.healthMs);
      await d.stop();
    }
    console.log(`empty state dir: start → /v1/health p50 ${p50(empty).toFixed(0)} ms (${empty.map((x) => x.toFixed(0)).join(", ")})`);
    figures.push(atMost("daemon start, empty state dir → /v1/health (p50)", Math.round(p50(empty)), "ms", 500, empty.map(Math.round)));

    const state = path.join(tmp, "history");
    const g0 = performance.now();
    writeHistory(state);
    const bytes = fs.readdirSync(path.join(state, "runs")).reduce((n, d) => n + fs.statSync(path.join(state, "runs", d, "events.jsonl")).size, 0);
    console.log(`history written in ${((performance.now() - g0) / 1000).toFixed(1)} s (${(bytes / 1024 ** 2).toFixed(1)} MB of events)`);

    // As an older daemon left it: no summaries yet.
    let d = await start(state);
    daemons.push(d);
    const firstStart = d.healthMs;
    await summariesWritten(state);
    const firstRss = rssMb(d.proc.pid!);
    await d.stop();
    console.log(`start without summaries (first start after an upgrade): ${firstStart.toFixed(0)} ms to /v1/health, RSS ${firstRss.toFixed(0)} MB once summaries are written`);
    figures.push({ figure: `daemon start, ${RUNS} terminal runs without summary.json (first start after upgrade) → /v1/health`, value: Math.round(firstStart), unit: "ms" });

    const starts: number[] = [];
    const rss: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      d = await start(state);
      starts.push(d.healthMs);
      await new Promise((r) => setTimeout(r, 200));
      rss.push(rssMb(d.proc.pid!));
      if (i < ROUNDS - 1) await d.stop();
    }
    daemons.push(d);
    console.log(`start with summaries: p50 ${p50(starts).toFixed(0)} ms (${starts.map((x) => x.toFixed(0)).join(", ")}); RSS p50 ${p50(rss).toFixed(0)} MB`);
    figures.push(atMost(`daemon start, ${RUNS} terminal runs × ${EVENTS} events → /v1/health (p50)`, Math.round(p50(starts)), "ms", 1500, starts.map(Math.round)));
    figures.push(atMost(`daemon RSS with ${RUNS} terminal runs, after start`, Math.round(p50(rss)), "MB", 150));

    // Every page of 100, twice (the first pass warms the route's validator).
    const pages: number[] = [];
    for (let pass = 0; pass < 2; pass++) {
      let cursor: string | null = null;
      let n = 0;
      do {
        const t = performance.now();
        const res = await get(`${d.url}/v1/runs?limit=100${cursor ? `&cursor=${cursor}` : ""}`);
        const ms = performance.now() - t;
        if (res.status !== 200) throw new Error(`page: ${res.status} ${res.body.toString().slice(0, 200)}`);
        const page = JSON.parse(res.body.toString()) as { runs: unknown[]; next_cursor: string | null };
        n += page.runs.length;
        if (pass === 1) pages.push(ms);
        cursor = page.next_cursor;
      } while (cursor);
      if (n !== RUNS) throw new Error(`pages listed ${n} runs, expected ${RUNS}`);
    }
    console.log(`GET /v1/runs?limit=100, every page: p50 ${p50(pages).toFixed(1)} ms, p95 ${pct(pages, 95).toFixed(1)} ms, max ${Math.max(...pages).toFixed(1)} ms`);
    figures.push(atMost("GET /v1/runs?limit=100 at 10,000 runs, a page of summaries (p95)", Number(pct(pages, 95).toFixed(1)), "ms", 50, pages.map((x) => Number(x.toFixed(2)))));

    const full: number[] = [];
    let fullBytes = 0;
    for (let i = 0; i < 2; i++) {
      const t = performance.now();
      const res = await get(`${d.url}/v1/runs`, 120_000);
      full.push(performance.now() - t);
      fullBytes = res.body.length;
    }
    const rssAfter = rssMb(d.proc.pid!);
    console.log(`GET /v1/runs (all runs, all events): ${full.map((x) => x.toFixed(0)).join(", ")} ms, ${(fullBytes / 1024 ** 2).toFixed(1)} MB; RSS after ${rssAfter.toFixed(0)} MB`);
    figures.push({ figure: `GET /v1/runs without limit at ${RUNS} runs (every event, the old answer; baseline)`, value: Math.round(p50(full)), unit: "ms", samples: full.map(Math.round) });
    figures.push({ figure: "daemon RSS after full GET /v1/runs", value: Math.round(rssAfter), unit: "MB" });
    await d.stop();

    const profDir = arg("cpu-prof", "");
    if (profDir) {
      fs.mkdirSync(profDir, { recursive: true });
      const p = await start(state, ["--cpu-prof", "--cpu-prof-dir", path.resolve(profDir)]);
      daemons.push(p);
      await p.stop();
      console.log(`CPU profile of a start with summaries in ${profDir}`);
    }
    writeFigures("history", figures);
    console.log("wrote build/bench/history.json");
  } finally {
    for (const x of daemons) await x.stop().catch(() => undefined);
    if (!process.argv.includes("--keep")) fs.rmSync(tmp, { recursive: true, force: true });
    else console.log(`kept ${tmp}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
