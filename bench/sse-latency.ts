/**
 * Time from an event's append to its delivery over the live event stream (SSE), on
 * loopback, p50/p95, next to what a client polling `from_event_id` every 200 ms sees.
 * One in-process daemon (mock mode) holds an active run; events are appended to it
 * directly and a client in this process reads the stream (so both ends share one
 * event loop: the figures include that hop). Three shapes:
 *   - single: one append, wait until it is read, a short pause, again;
 *   - burst:  100 appends in one turn, the latency of each;
 *   - poll:   the same single appends, seen by a 200 ms poller instead.
 */
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { createDaemon } from "../src/server.js";

const SINGLE = 500;
const BURSTS = 20;
const BURST = 100;
const POLLS = 40;

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const ms = (ns: bigint) => Number(ns) / 1e6;
const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(3)} ms, p95 ${pct(xs, 95).toFixed(3)} ms, max ${Math.max(...xs).toFixed(3)} ms (n=${xs.length})`;

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-sse-"));
const d = await createDaemon({ stateDir, vm: false, auth: null });
const { url } = await d.listen("tcp://127.0.0.1:0");
const created = await fetch(`${url}/v1/runs`, {
  method: "POST",
  body: JSON.stringify({ spec: { api_version: "v1", kind: "workflow", name: "idle", sandbox: { mode: "mock" }, workflow: { steps: [{ name: "nap", run: { program: "sleep", args: ["3600"] } }] } } }),
});
const runId = ((await created.json()) as { run_id: string }).run_id;
const run = d.service.get(runId);

// Append time of each tick, by its message.
const appended = new Map<string, bigint>();
const seen = new Map<string, bigint>();
let waiter: (() => void) | undefined;
const append = (msg: string) => {
  appended.set(msg, process.hrtime.bigint());
  run.append({ type: "bench.tick", message: msg });
};

const u = new URL(url);
const req = http.get({ host: u.hostname, port: u.port, path: `/v1/runs/${runId}/events`, headers: { accept: "text/event-stream" } }, (res) => {
  let buf = "";
  res.setEncoding("utf8");
  res.on("data", (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split("\n").find((l) => l.startsWith("data: "));
      if (!data) continue;
      const e = JSON.parse(data.slice(6)) as { message: string; event_type: string };
      if (e.event_type === "bench.tick") seen.set(e.message, process.hrtime.bigint());
    }
    waiter?.();
  });
});

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((r) => {
      waiter = r;
      setTimeout(r, 50).unref();
    });
  }
}

await until(() => run.listenerCount === 1, "the stream to attach");

const single: number[] = [];
for (let i = 0; i < SINGLE; i++) {
  const m = `s${i}`;
  append(m);
  await until(() => seen.has(m), m);
  single.push(ms(seen.get(m)! - appended.get(m)!));
  await delay(2);
}

const burst: number[] = [];
for (let b = 0; b < BURSTS; b++) {
  const ids = Array.from({ length: BURST }, (_, i) => `b${b}-${i}`);
  for (const m of ids) append(m);
  await until(() => ids.every((m) => seen.has(m)), `burst ${b}`);
  for (const m of ids) burst.push(ms(seen.get(m)! - appended.get(m)!));
  await delay(5);
}

// A poller as clients follow runs today: GET …/events?from_event_id=<last> every 200 ms.
const poll: number[] = [];
let last = run.events[run.events.length - 1].event_id;
const pollSeen = new Map<string, bigint>();
let polling = true;
const poller = (async () => {
  while (polling) {
    const r = await fetch(`${url}/v1/runs/${runId}/events?from_event_id=${last}`);
    const evs = (await r.json()) as Array<{ message: string; event_id: string; event_type: string }>;
    const t = process.hrtime.bigint();
    for (const e of evs) if (e.event_type === "bench.tick") pollSeen.set(e.message, t);
    if (evs.length) last = evs[evs.length - 1].event_id;
    await delay(200);
  }
})();
for (let i = 0; i < POLLS; i++) {
  const m = `p${i}`;
  await delay(37 + ((i * 53) % 150)); // appends fall anywhere in the poll period
  append(m);
  await until(() => pollSeen.has(m), m);
  poll.push(ms(pollSeen.get(m)! - appended.get(m)!));
}
polling = false;
await poller;

console.log(`SSE, one event at a time:   ${fmt(single)}`);
console.log(`SSE, bursts of ${BURST} events: ${fmt(burst)}`);
console.log(`poll every 200 ms:          ${fmt(poll)}`);

req.destroy();
await d.close();
fs.rmSync(stateDir, { recursive: true, force: true });
