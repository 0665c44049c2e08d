/**
 * What the fleet features cost: a /metrics scrape (median of 200, in process over TCP)
 * after 200 mock runs, and the event append with the latency histogram versus without
 * (median of 20 windows of 500 appends each, same run store).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultIds } from "../src/ids.js";
import { Metrics } from "../src/metrics.js";
import { Run } from "../src/runs/run.js";
import { createDaemon } from "../src/server.js";
import { RunStore } from "../src/store/runs.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-metrics-"));

async function scrapeCost(): Promise<void> {
  const daemon = await createDaemon({ stateDir: path.join(dir, "state"), vm: false });
  const { url } = await daemon.listen("tcp://127.0.0.1:0");
  const spec = path.join(dir, "spec.json");
  fs.writeFileSync(spec, JSON.stringify({ api_version: "v1", kind: "workflow", name: "b", sandbox: { mode: "mock" }, workflow: { steps: [{ name: "s", run: { program: "echo", args: ["x"] } }] } }));
  for (let i = 0; i < 200; i++) await fetch(`${url}/v1/runs`, { method: "POST", body: JSON.stringify({ file: spec }) }).then((r) => r.arrayBuffer());
  while (daemon.service.activeCount() > 0) await new Promise((r) => setTimeout(r, 20));
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    bytes = (await (await fetch(`${url}/metrics`)).text()).length;
    times.push(performance.now() - t0);
  }
  console.log(`/metrics scrape after 200 runs: median ${median(times).toFixed(2)} ms, ${bytes} bytes`);
  await daemon.close();
}

function appendCost(withMetrics: boolean): number {
  const store = new RunStore(path.join(dir, withMetrics ? "m" : "n"));
  const metrics = withMetrics ? new Metrics({ stateDir: dir, vmsLive: () => 0, stagesWaiting: () => 0, activeRuns: () => 0, draining: () => false }) : undefined;
  const now = new Date().toISOString();
  const run = new Run(
    { id: "bench", status: "running", file: "b.yaml", report: null, error: null, attempt_id: 1, started_at: now, updated_at: now, finished_at: null, terminal_reason: null, terminal_event_id: null, exit_code: null, policy: null, sandbox_mode: null, stages: [], artifact_publication: null },
    [],
    { store, ids: defaultIds(Date.now), now: Date.now, metrics },
  );
  run.persist();
  const windows: number[] = [];
  for (let w = 0; w < 20; w++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 500; i++) run.append({ type: "log.chunk", message: "x".repeat(80) });
    windows.push(Number(process.hrtime.bigint() - t0) / 500 / 1000);
  }
  store.close();
  return median(windows);
}

await scrapeCost();
const without = appendCost(false);
const withHist = appendCost(true);
console.log(`event append: ${without.toFixed(2)} µs without the latency histogram, ${withHist.toFixed(2)} µs with it`);
fs.rmSync(dir, { recursive: true, force: true });
