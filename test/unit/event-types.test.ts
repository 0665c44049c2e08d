// openapi.yaml names every event type the daemon appends (EventType / EventTypeV2) and
// types each one's payload (TypedRunEvent): real runs in mock mode, bounds included,
// must only produce events that the typed union accepts.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { v2EventName } from "../../src/naming.js";
import { definition, validateSchema } from "../helpers/openapi.js";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

const schemas = definition.components!.schemas! as Record<string, { enum?: string[] }>;
const LEGACY = schemas.EventType.enum!;
const V2 = schemas.EventTypeV2.enum!;

const specDir = tmpDir("vbx-evtypes-");
const SPECS = {
  ok: writeSpec(specDir, workflow("ok", [
    { name: "a", run: { program: "echo", args: ["one\ntwo\nthree"] } },
    { name: "b", depends_on: ["a"], run: { program: "cat", stdin_from: "a" } },
  ])),
  // Output over --max-stage-output and more lines than --max-output-events.
  big: writeSpec(specDir, workflow("big", [{ name: "a", run: { program: "echo", args: ["x".repeat(100) + "\ny\nz"] } }])),
  failing: writeSpec(specDir, workflow("failing", [
    { name: "a", run: { program: "false" } },
    { name: "b", depends_on: ["a"], run: { program: "echo", args: ["never"] } },
  ])),
  sleepy: writeSpec(specDir, workflow("sleepy", [{ name: "a", run: { program: "sleep", args: ["300"] } }])),
  broken: writeSpec(specDir, "{ not json", "broken.json"),
};

let t: TestDaemon;
beforeAll(async () => {
  t = await startDaemon(path.join(tmpDir("vbx-evtypes-state-"), "s"), { limits: { maxStageOutputBytes: 64, maxOutputEvents: 2 } });
});
afterAll(async () => {
  await t?.d.close();
});

async function finished(id: string) {
  return waitFor(async () => {
    const r = await sdk(t.url).getRun(id);
    return ["succeeded", "failed", "cancelled"].includes(r.status) && r.events.some((e) => e.event_type === "log.closed" || e.event_type === "run.failed" || e.event_type === "run.cancelled") ? r : null;
  }, `run ${id} to end`);
}

describe("event types in openapi.yaml", () => {
  it("EventType and EventTypeV2 pair up as the daemon names them", () => {
    expect(LEGACY).toHaveLength(V2.length);
    LEGACY.forEach((legacy, i) => expect(v2EventName(legacy), legacy).toBe(V2[i]));
  });

  it("every event of real runs (success, bounds, failure, cancel, bad spec) is a TypedRunEvent, in both namings", async () => {
    const c = sdk(t.url);
    const ids: string[] = [];
    for (const file of [SPECS.ok, SPECS.big, SPECS.failing, SPECS.broken]) ids.push((await c.createRun({ file })).run_id);
    const sleepy = (await c.createRun({ file: SPECS.sleepy })).run_id;
    await waitFor(async () => (await c.listEvents(sleepy)).some((e) => e.event_type === "stage.started"), "sleepy to start");
    await c.cancelRun(sleepy, "test");
    ids.push(sleepy);
    const seen = new Set<string>();
    for (const id of ids) {
      await finished(id);
      for (const apiVersion of [undefined, "v2"] as const) {
        const events = await c.listEvents(id, { apiVersion });
        for (const e of events) {
          expect(validateSchema("TypedRunEvent", e), `${id} ${e.event_type}: ${JSON.stringify(e)}`).toEqual([]);
          seen.add(e.event_type);
        }
      }
    }
    // The runs above cover the bounds events and the failure paths (not the agent/VM-only ones).
    for (const type of ["stage.output_truncated", "log.truncated", "stage.skipped", "stage.failed", "run.failed", "run.cancelled", "spec.parse_failed", "sandbox.selected", "StageOutputTruncated", "RunCancelled"]) {
      expect(seen, type).toContain(type);
    }
  });

  it("TypedRunEvent refuses a known type with a wrong payload (the check can fail)", () => {
    const e = { ts_ms: 1, level: "info", event_type: "log.chunk", message: "m", run_id: "r", event_id: "0192f3a0-7c1e-7a3b-9c4d-5e6f7a8b9c00", seq: 0, attempt_id: 1, timestamp: "2026-11-24T05:00:00.000Z", event_type_v2: "LogChunk", payload: { nope: 1 } };
    expect(validateSchema("TypedRunEvent", e)).not.toEqual([]);
    expect(validateSchema("TypedRunEvent", { ...e, payload: { data: "x" } })).toEqual([]);
  });
});
