/**
 * Cost of appending an event as a run grows: the 10,000th append relative to the 10th
 * (target ≤ 2×: appending never rewrites the run). Each figure is the median of a
 * window of 100 appends, measured next to a bare fs.writeSync of the same bytes as a
 * same-run baseline.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultIds } from "../src/ids.js";
import { Run } from "../src/runs/run.js";
import { RunStore } from "../src/store/runs.js";

const N = 10_000;
const WINDOW = 100;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-"));
const store = new RunStore(dir);
const now = Date.now;
const run = new Run(
  {
    id: "bench",
    status: "running",
    file: "bench.yaml",
    report: null,
    error: null,
    attempt_id: 1,
    started_at: new Date().toISOString(),
    updated_at: new Date().toISOString(),
    finished_at: null,
    terminal_reason: null,
    terminal_event_id: null,
    exit_code: null,
    policy: null,
    artifact_publication: null,
  },
  [],
  { store, ids: defaultIds(now), now },
);
run.persist();

const cost: number[] = [];
for (let i = 1; i <= N; i++) {
  const t = process.hrtime.bigint();
  run.append({ type: "log.chunk", message: `line ${i}`, stream: "stdout", payload: { data: `line ${i} of the benchmark output` } });
  cost.push(Number(process.hrtime.bigint() - t));
}
const baseFd = fs.openSync(path.join(dir, "baseline.jsonl"), "a");
const base: number[] = [];
const line = JSON.stringify(run.events[run.events.length - 1]) + "\n";
for (let i = 1; i <= N; i++) {
  const t = process.hrtime.bigint();
  fs.writeSync(baseFd, line);
  base.push(Number(process.hrtime.bigint() - t));
}
fs.closeSync(baseFd);
store.close();

const early = median(cost.slice(9, 9 + WINDOW));
const late = median(cost.slice(N - WINDOW, N));
const baseEarly = median(base.slice(9, 9 + WINDOW));
const baseLate = median(base.slice(N - WINDOW, N));
const size = fs.statSync(path.join(dir, "runs", "bench", "events.jsonl")).size;
fs.rmSync(dir, { recursive: true, force: true });
console.log(`event append, median of ${WINDOW} appends: around #10 ${(early / 1000).toFixed(1)} µs, around #${N} ${(late / 1000).toFixed(1)} µs (log ${size} bytes)`);
console.log(`baseline bare fs.writeSync:              around #10 ${(baseEarly / 1000).toFixed(1)} µs, around #${N} ${(baseLate / 1000).toFixed(1)} µs`);
console.log(`APPEND-RATIO ${(late / early).toFixed(2)}x (10,000th vs 10th; target <= 2x); baseline ratio ${(baseLate / baseEarly).toFixed(2)}x; append/bare-write ${(late / baseLate).toFixed(2)}x`);
