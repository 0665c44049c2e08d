/**
 * Time from an event's append to its delivery by the SDK's `follow()` (@voidbox/client:
 * SSE, parsed and typed), p50/p95, over TCP and over the Unix socket. One in-process
 * daemon (mock mode) holds an active run; events are appended to it directly, one at a
 * time, each after the previous one was delivered (both ends share one event loop: the
 * figures include that hop).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { createClient } from "@voidbox/client";
import { createDaemon } from "../src/server.js";

const N = 300;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(3)} ms, p95 ${pct(xs, 95).toFixed(3)} ms, max ${Math.max(...xs).toFixed(3)} ms (n=${xs.length})`;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-sdk-"));
const d = await createDaemon({ stateDir: path.join(dir, "state"), vm: false, auth: null });
const tcp = (await d.listen("tcp://127.0.0.1:0")).url;
const unix = (await d.listen(`unix://${path.join(dir, "d.sock")}`)).url;

try {
  for (const [name, url] of [["TCP", tcp], ["Unix socket", unix]] as const) {
    const client = createClient(url);
    const { run_id } = await client.createRun({
      spec: { api_version: "v1", kind: "workflow", name: "idle", sandbox: { mode: "mock" }, workflow: { steps: [{ name: "nap", run: { program: "sleep", args: ["3600"] } }] } },
    });
    const run = d.service.get(run_id);
    const appended = new Map<string, bigint>();
    const lat: number[] = [];
    let delivered: (() => void) | undefined;
    const ac = new AbortController();
    const reader = (async () => {
      for await (const e of client.follow(run_id, { signal: ac.signal })) {
        const t0 = appended.get(e.message);
        if (t0 === undefined) continue;
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        delivered?.();
      }
    })();
    await delay(200); // let the stream open and replay the run's first events
    for (let i = 0; i < N; i++) {
      const msg = `tick ${i}`;
      const done = new Promise<void>((r) => (delivered = r));
      appended.set(msg, process.hrtime.bigint());
      run.append({ type: "bench.tick", message: msg });
      await Promise.race([done, delay(5_000).then(() => Promise.reject(new Error(`tick ${i} not delivered within 5 s`)))]);
    }
    ac.abort();
    await reader;
    await client.cancelRun(run_id);
    await client.close();
    console.log(`sdk follow() over ${name}: append → delivery ${fmt(lat)}`);
  }
} finally {
  await d.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
