// The run state machine (src/runs/run.ts) on its own: a Run over a RunStore in a temp
// dir, with fixed ids and a settable clock. No daemon, no HTTP.
import fs from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Run, type RunDeps } from "../../../src/runs/run.js";
import { RunStore } from "../../../src/store/runs.js";
import { readFreshSummary } from "../../../src/store/summary.js";
import type { RunEvent } from "../../helpers/types.js";
import { tmpDir } from "../../helpers/daemon.js";
import { runFile, T0 } from "../../helpers/statefiles.js";

let dir: string;
let store: RunStore;
let clock: number;
let finished: string[];
let deps: RunDeps;

beforeEach(() => {
  dir = tmpDir("vbx-run-");
  store = new RunStore(dir);
  clock = T0;
  finished = [];
  let n = 0;
  deps = {
    store,
    ids: { runId: () => "unused", eventId: () => `ev-${n++}` },
    now: () => clock,
    metrics: { eventAppended: () => undefined, runFinished: (s) => void finished.push(s) },
  };
});

afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const logLines = (id: string) =>
  fs
    .readFileSync(path.join(dir, "runs", id, "events.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as RunEvent);

describe("Run.append", () => {
  it("stamps the envelope: gapless seq from 0, event id, time, attempt, v2 name, context keys", () => {
    const run = new Run(runFile("r1", { attempt_id: 2 }), [], deps);
    clock = T0 + 1500;
    const a = run.append({ type: "run.started", message: "go" });
    const b = run.append({ type: "stage.completed", message: "done", stage_name: "fetch", payload: { exit_code: 0 }, level: "warn" });
    expect(a).toMatchObject({ seq: 0, event_id: "ev-0", run_id: "r1", attempt_id: 2, ts_ms: T0 + 1500, level: "info", payload: null });
    expect(a.timestamp).toBe("2026-11-27T10:00:01.500Z");
    expect(a.event_type_v2).toBe("RunStarted");
    expect(b).toMatchObject({ seq: 1, event_id: "ev-1", event_type: "stage.completed", event_type_v2: "StageSucceeded", stage_name: "fetch", level: "warn", payload: { exit_code: 0 } });
    expect(run.events.map((e) => e.seq)).toEqual([0, 1]);
    expect(run.file.updated_at).toBe(b.timestamp);
  });

  it("writes each event to events.jsonl before it is served, and tells subscribers", () => {
    const run = new Run(runFile("r2"), [], deps);
    let told = 0;
    const off = run.subscribe(() => told++);
    run.append({ type: "run.started", message: "go" });
    expect(logLines("r2").map((e) => e.event_id)).toEqual(["ev-0"]);
    expect(told).toBe(1);
    off();
    run.append({ type: "log.closed", message: "end" });
    expect(told).toBe(1);
    expect(run.listenerCount).toBe(0);
  });

  it("an event whose write fails is not kept, and the next one takes its seq", () => {
    let fail = true;
    const flaky = new (class extends RunStore {
      override appendEvent(id: string, line: string): void {
        if (fail) throw new Error("ENOSPC");
        super.appendEvent(id, line);
      }
    })(dir);
    const run = new Run(runFile("r3"), [], { ...deps, store: flaky });
    expect(() => run.append({ type: "run.started", message: "go" })).toThrow("ENOSPC");
    expect(run.events).toEqual([]);
    fail = false;
    expect(run.append({ type: "run.started", message: "go" }).seq).toBe(0);
    flaky.close();
  });

  it("continues the seq of the events it was loaded with", () => {
    const first = new Run(runFile("r4"), [], deps);
    first.append({ type: "run.started", message: "go" });
    first.append({ type: "env.provisioned", message: "env" });
    const again = new Run(runFile("r4"), [...first.events], deps);
    expect(again.append({ type: "log.closed", message: "end" }).seq).toBe(2);
  });
});

describe("Run.finish", () => {
  it("moves to the terminal status with the event as terminal event; fields applied; counted once", () => {
    const run = new Run(runFile("f1"), [], deps);
    run.append({ type: "run.started", message: "go" });
    expect(run.terminal).toBe(false);
    clock = T0 + 9000;
    const ev = run.finish("failed", { type: "run.failed", message: "boom", level: "error" }, { error: "boom", terminal_reason: "stage x failed", exit_code: 3 });
    expect(run.terminal).toBe(true);
    expect(run.status).toBe("failed");
    expect(run.file).toMatchObject({ error: "boom", terminal_reason: "stage x failed", exit_code: 3, terminal_event_id: ev.event_id, finished_at: ev.timestamp });
    expect(run.file.finished_at).toBe("2026-11-27T10:00:09.000Z");
    expect(finished).toEqual(["failed"]);
  });

  it("changes nothing when its terminal event cannot be written", () => {
    const broken = new (class extends RunStore {
      override appendEvent(): void {
        throw new Error("EROFS");
      }
    })(dir);
    const run = new Run(runFile("f2"), [], { ...deps, store: broken });
    expect(() => run.finish("succeeded", { type: "run.finished", message: "ok" }, { exit_code: 0 })).toThrow("EROFS");
    expect(run.status).toBe("running");
    expect(run.file.terminal_event_id).toBeNull();
    expect(run.file.exit_code).toBeNull();
    expect(finished).toEqual([]);
    broken.close();
  });
});

describe("stages", () => {
  it("planStages queues every stage; patchStage updates one; activeStageCount counts running ones", () => {
    const run = new Run(runFile("s1"), [], deps);
    run.planStages([
      { name: "a", depends_on: [], group: null },
      { name: "b", depends_on: ["a"], group: "g" },
    ]);
    expect(run.stages.map((s) => [s.name, s.status, s.attempt])).toEqual([
      ["a", "queued", 0],
      ["b", "queued", 0],
    ]);
    run.patchStage("a", { status: "running", attempt: 1, started_at: T0 });
    run.patchStage("nope", { status: "running" });
    expect(run.activeStageCount).toBe(1);
    expect(run.stageViews()[0]).toMatchObject({ name: "a", status: "running", attempt: 1, started_at: "2026-11-27T10:00:00.000Z", finished_at: null, duration_ms: null });
    expect(run.toState(false).stage_states).toEqual({
      a: { status: "running", attempt: 1, exit_code: null },
      b: { status: "queued", attempt: 0, exit_code: null },
    });
  });

  it("abortStages: queued ones skipped, running ones failed with exit code -1, each with its event; finished ones kept", () => {
    const run = new Run(runFile("s2"), [], deps);
    run.planStages(["done", "busy", "later"].map((name) => ({ name, depends_on: [], group: null })));
    run.patchStage("done", { status: "succeeded", attempt: 1, started_at: T0, finished_at: T0 + 10, exit_code: 0 });
    run.patchStage("busy", { status: "running", attempt: 2, started_at: T0 + 100 });
    clock = T0 + 600;
    run.abortStages("run cancelled");
    expect(run.stages.map((s) => [s.name, s.status, s.exit_code])).toEqual([
      ["done", "succeeded", 0],
      ["busy", "failed", -1],
      ["later", "skipped", null],
    ]);
    const failed = run.events.find((e) => e.event_type === "stage.failed")!;
    expect(failed).toMatchObject({ stage_name: "busy", level: "error", payload: { duration_ms: 500, exit_code: -1, error: "run cancelled", stage_attempt: 2 } });
    expect(run.events.filter((e) => e.event_type === "stage.skipped").map((e) => e.stage_name)).toEqual(["later"]);
    expect(run.activeStageCount).toBe(0);
  });
});

describe("reading a run", () => {
  it("eventsJson: all events, or those after a known id; v2 names on request; unknown id → all", () => {
    const run = new Run(runFile("e1"), [], deps);
    for (const type of ["run.started", "env.provisioned", "run.finished"]) run.append({ type, message: type });
    const parse = (b: Buffer) => JSON.parse(b.toString("utf8")) as RunEvent[];
    expect(parse(run.eventsJson(undefined, false)).map((e) => e.event_type)).toEqual(["run.started", "env.provisioned", "run.finished"]);
    expect(parse(run.eventsJson("ev-0", false)).map((e) => e.seq)).toEqual([1, 2]);
    expect(parse(run.eventsJson("ev-2", false))).toEqual([]);
    expect(parse(run.eventsJson("no-such-id", false))).toHaveLength(3);
    expect(parse(run.eventsJson(undefined, true)).map((e) => e.event_type)).toEqual(["RunStarted", "EnvironmentProvisioned", "RunCompleted"]);
    // Appending invalidates the cached encoding.
    run.append({ type: "log.closed", message: "end" });
    expect(parse(run.eventsJson(undefined, false))).toHaveLength(4);
    expect(parse(run.eventsJson(undefined, true)).at(-1)!.event_type).toBe("LogClosed");
  });

  it("serves loaded events as the lines they were read as", () => {
    const ev: RunEvent = {
      ts_ms: T0,
      level: "info",
      event_type: "run.started",
      message: "go",
      run_id: "e2",
      event_id: "ev-x",
      seq: 0,
      attempt_id: 1,
      timestamp: new Date(T0).toISOString(),
      event_type_v2: "RunStarted",
      payload: null,
    };
    // Another key order than the run would write: served verbatim, never encoded again.
    const line = JSON.stringify(Object.fromEntries(Object.entries(ev).reverse()));
    expect(line).not.toBe(JSON.stringify(ev));
    const run = new Run(runFile("e2"), [ev], deps, [line]);
    expect(run.eventsJson(undefined, false).toString("utf8")).toBe(`[${line}]`);
    expect(run.eventJson(0, false)).toBe(line);
    expect(run.indexAfter("ev-x")).toBe(1);
    expect(run.indexAfter("other")).toBe(0);
  });

  it("toState carries the live counters and the v2 names on request; summary counts events", () => {
    const run = new Run(runFile("e3"), [], deps);
    run.append({ type: "run.started", message: "go" });
    run.activeMicrovms = 2;
    const legacy = run.toState(false);
    expect(legacy).toMatchObject({ id: "e3", status: "running", active_stage_count: 0, active_microvm_count: 2, stage_states: null });
    expect(legacy.events[0]!.event_type).toBe("run.started");
    expect(run.toState(true).events[0]!.event_type).toBe("RunStarted");
    expect(run.summary()).toMatchObject({ id: "e3", status: "running", event_count: 1, sandbox_mode: null });
  });
});

describe("Run.persist", () => {
  it("writes run.json; a terminal run also gets a summary that matches its files", () => {
    const run = new Run(runFile("p1"), [], deps);
    run.append({ type: "run.started", message: "go" });
    run.persist();
    const runDir = path.join(dir, "runs", "p1");
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "run.json"), "utf8"))).toMatchObject({ id: "p1", status: "running" });
    expect(readFreshSummary(runDir)).toBeNull();

    run.finish("succeeded", { type: "run.finished", message: "ok" }, { exit_code: 0 });
    run.persist();
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "run.json"), "utf8"))).toMatchObject({ status: "succeeded", exit_code: 0 });
    expect(readFreshSummary(runDir)).toMatchObject({ id: "p1", status: "succeeded", event_count: 2 });
  });
});
