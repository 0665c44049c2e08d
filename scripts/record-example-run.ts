// Records the run openapi.yaml shows as its example (`npx tsx scripts/record-example-run.ts`):
// examples/hello.yaml as run `build-42` on an in-process daemon (micro-VMs when QEMU and the
// guest image are there, else the mock sandbox), printed as JSON — the run, its stages, and
// its events as SSE frames — so the spec's examples are a real run, not hand-written ones.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createDaemon } from "../src/server.js";

const TERMINAL = ["succeeded", "failed", "cancelled"];
const dir = mkdtempSync(path.join(os.tmpdir(), "vbx-example-"));
const daemon = await createDaemon({ stateDir: path.join(dir, "state"), auth: null });
try {
  const base = (await daemon.listen("tcp://127.0.0.1:0")).url.replace(/\/$/, "");
  const created = await fetch(`${base}/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ file: "examples/hello.yaml", run_id: "build-42" }),
  });
  if (created.status !== 200) throw new Error(`create: ${created.status} ${await created.text()}`);
  const deadline = Date.now() + 300_000; // TCG boots of two micro-VMs on a loaded machine
  let run: { status: string; events: Array<{ event_id: string; event_type: string }> };
  for (;;) {
    run = (await (await fetch(`${base}/v1/runs/build-42`)).json()) as typeof run;
    if (TERMINAL.includes(run.status)) break;
    if (Date.now() > deadline) throw new Error(`run not terminal within 300 s (state ${run.status})`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const stages = await (await fetch(`${base}/v1/runs/build-42/stages`)).json();
  const sse = run.events.map((e) => `id: ${e.event_id}\nevent: ${e.event_type}\ndata: ${JSON.stringify(e)}\n\n`).join("");
  process.stdout.write(JSON.stringify({ run, stages, sse }, null, 1) + "\n");
} finally {
  await daemon.close();
  rmSync(dir, { recursive: true, force: true });
}
