import { describe, it, expect } from "vitest";
import { runEngine } from "../../src/engine/index.js";
import { DEFAULT_POLICY, type EngineEvent, type EngineHooks, type RunPolicy, type StagePatch, type StagePlan } from "../../src/engine/types.js";
import { MockSandbox } from "../../src/sandbox/mock.js";
import { waitFor } from "../helpers/wait.js";
import type { RunSpec, WorkflowStep, BoxSpec, PipelineStageSpec } from "../../src/spec/types.js";

const SANDBOX = { mode: "mock" as const, memory_mb: 512, vcpus: 1, network: false, env: {} };

function wf(steps: WorkflowStep[], output_step?: string): RunSpec {
  return { api_version: "v1", kind: "workflow", name: "t", sandbox: SANDBOX, workflow: { steps, output_step } };
}

const step = (name: string, program: string, args: string[] = [], more: Partial<WorkflowStep> = {}): WorkflowStep => ({
  name,
  run: { program, args },
  ...more,
});

interface Recorder {
  hooks: EngineHooks;
  events: EngineEvent[];
  plans: StagePlan[][];
  patches: Array<{ name: string; patch: StagePatch }>;
  outputs: Array<{ stage: string; result: Buffer; artifacts: string[] }>;
  running: Set<string>;
  maxRunning: number;
  of(type: string, stage?: string): EngineEvent[];
}

function recorder(): Recorder {
  const r: Recorder = {
    events: [],
    plans: [],
    patches: [],
    outputs: [],
    running: new Set(),
    maxRunning: 0,
    of(type, stage) {
      return r.events.filter((e) => e.type === type && (stage === undefined || e.stage_name === stage));
    },
    hooks: {
      event: (e) => void r.events.push(e),
      planStages: (p) => void r.plans.push(p),
      stage: (name, patch) => {
        r.patches.push({ name, patch });
        if (patch.status === "running") {
          r.running.add(name);
          r.maxRunning = Math.max(r.maxRunning, r.running.size);
        } else if (patch.status) r.running.delete(name);
      },
      vmDelta: () => {},
      output: (stage, result, artifacts) => void r.outputs.push({ stage, result, artifacts: artifacts.map((a) => a.name) }),
    },
  };
  return r;
}

function run(spec: RunSpec, policy: Partial<RunPolicy> = {}, signal = new AbortController().signal) {
  const rec = recorder();
  const promise = runEngine({ runId: "r1", spec, policy: { ...DEFAULT_POLICY, ...policy }, sandbox: new MockSandbox(), signal, hooks: rec.hooks, now: Date.now });
  return { rec, promise };
}

describe("engine: workflow DAG", () => {
  it("runs independent ready steps concurrently", async () => {
    const { rec, promise } = run(wf([step("a", "sleep", ["1"]), step("b", "sleep", ["1"]), step("c", "echo", ["done"], { depends_on: ["a", "b"] })]));
    const result = await promise;
    expect(result.report.success).toBe(true);
    const idx = (t: string, s: string) => rec.events.findIndex((e) => e.type === t && e.stage_name === s);
    const firstCompleted = Math.min(idx("stage.completed", "a"), idx("stage.completed", "b"));
    expect(idx("stage.started", "a")).toBeGreaterThanOrEqual(0);
    expect(idx("stage.started", "a")).toBeLessThan(firstCompleted);
    expect(idx("stage.started", "b")).toBeLessThan(firstCompleted);
    expect(rec.maxRunning).toBe(2);
    // c only starts after both dependencies completed
    expect(idx("stage.started", "c")).toBeGreaterThan(Math.max(idx("stage.completed", "a"), idx("stage.completed", "b")));
    expect(result.report.output).toBe("done\n");
  });

  it("plans stages and queues every step with its depends_on", async () => {
    const { rec, promise } = run(wf([step("fetch", "echo", ["hello"]), step("shout", "tr", ["a-z", "A-Z"], { depends_on: ["fetch"] })]));
    await promise;
    expect(rec.plans).toEqual([
      [
        { name: "fetch", depends_on: [], group: null },
        { name: "shout", depends_on: ["fetch"], group: null },
      ],
    ]);
    expect(rec.of("workflow.planned")).toHaveLength(1);
    expect(rec.of("stage.queued").map((e) => [e.stage_name, e.payload])).toEqual([
      ["fetch", { depends_on: [] }],
      ["shout", { depends_on: ["fetch"] }],
    ]);
    const completed = rec.of("stage.completed", "fetch")[0];
    expect(completed.payload).toMatchObject({ exit_code: 0, stage_attempt: 1 });
    expect(typeof completed.payload!.duration_ms).toBe("number");
  });

  it("pipes a dependency's stdout into stdin", async () => {
    const { promise } = run(wf([step("fetch", "echo", ["hello"]), step("shout", "tr", ["a-z", "A-Z"], { depends_on: ["fetch"] })]));
    const result = await promise;
    expect(result.report.success).toBe(true);
    expect(result.report.output).toBe("HELLO\n");
    expect(result.exitCode).toBe(0);
  });

  it("stdin_from picks one dependency; without it all dependencies are concatenated in order", async () => {
    const steps = (stdin_from?: string) => [
      step("a", "echo", ["aaa"]),
      step("b", "echo", ["bbb"]),
      { name: "c", depends_on: ["a", "b"], run: { program: "cat", args: [], stdin_from } },
    ];
    const picked = await run(wf(steps("b"))).promise;
    expect(picked.report.output).toBe("bbb\n");
    const all = await run(wf(steps())).promise;
    expect(all.report.output).toBe("aaa\nbbb\n");
  });

  it("skips a step whose dependency failed and fails the run", async () => {
    const { rec, promise } = run(wf([step("a", "false"), step("b", "echo", ["x"], { depends_on: ["a"] }), step("c", "echo", ["y"], { depends_on: ["b"] })]), {
      max_stage_retries: 0,
    });
    const result = await promise;
    expect(result.report.success).toBe(false);
    expect(rec.of("stage.failed", "a")).toHaveLength(1);
    expect(rec.of("stage.failed", "a")[0].payload).toMatchObject({ exit_code: 1, stage_attempt: 1 });
    expect(rec.of("stage.started", "b")).toHaveLength(0);
    const skipped = rec.of("stage.skipped");
    expect(skipped.map((e) => e.stage_name)).toEqual(["b", "c"]);
    expect(typeof skipped[0].payload!.reason).toBe("string");
    expect(result.exitCode).toBe(1);
    expect(result.error).toMatch(/a/);
  });

  it("the output step decides success", async () => {
    const steps = [step("bad", "false"), step("good", "echo", ["fine"])];
    const ok = await run(wf(steps, "good"), { max_stage_retries: 0 }).promise;
    expect(ok.report.success).toBe(true);
    expect(ok.exitCode).toBe(0);
    expect(ok.report.output).toBe("fine\n");
    expect(ok.publishStage).toBe("good");
    expect(ok.mustPublish).toBe(false);

    const bad = await run(wf(steps, "bad"), { max_stage_retries: 0 }).promise;
    expect(bad.report.success).toBe(false);
    expect(bad.exitCode).toBe(1);
  });

  it("a single-step workflow must publish", async () => {
    const r = await run(wf([step("only", "true")])).promise;
    expect(r.mustPublish).toBe(true);
    expect(r.publishStage).toBe("only");
  });
});

describe("engine: policy", () => {
  it("max_stage_retries: a failing step with retries 2 is attempted 3 times", async () => {
    const { rec, promise } = run(wf([step("flaky", "false")]), { max_stage_retries: 2 });
    const result = await promise;
    expect(result.report.success).toBe(false);
    expect(rec.of("stage.started", "flaky").map((e) => e.payload!.stage_attempt)).toEqual([1, 2, 3]);
    expect(rec.of("stage.failed", "flaky").map((e) => e.payload!.stage_attempt)).toEqual([1, 2, 3]);
    const attempts = rec.patches.filter((p) => p.name === "flaky" && p.patch.attempt !== undefined).map((p) => p.patch.attempt);
    expect(attempts).toEqual([1, 2, 3]);
  });

  it("max_stage_retries: a succeeding step is not retried", async () => {
    const { rec, promise } = run(wf([step("ok", "true")]), { max_stage_retries: 2 });
    await promise;
    expect(rec.of("stage.started", "ok")).toHaveLength(1);
  });

  it("stage_timeout_secs fails a stage that runs longer, and the run", async () => {
    const { rec, promise } = run(wf([step("slow", "sleep", ["30"])]), { stage_timeout_secs: 1, max_stage_retries: 0 });
    const result = await promise;
    expect(result.report.success).toBe(false);
    const failed = rec.of("stage.failed", "slow");
    expect(failed).toHaveLength(1);
    expect(String(failed[0].payload!.error)).toMatch(/timed out/);
    expect(failed[0].payload!.exit_code).not.toBe(0);
    expect(result.error).toMatch(/timed out/);
  });

  it("a step's own timeout_secs overrides the policy (shorter)", async () => {
    const { rec, promise } = run(wf([step("slow", "sleep", ["30"], { timeout_secs: 1 })]), { stage_timeout_secs: 3600, max_stage_retries: 0 });
    const result = await promise;
    expect(result.report.success).toBe(false);
    expect(String(rec.of("stage.failed", "slow")[0].payload!.error)).toMatch(/timed out after 1 s/);
  });

  it("a step's own timeout_secs overrides the policy (longer)", async () => {
    const { promise } = run(wf([step("nap", "sleep", ["2"], { timeout_secs: 30 })]), { stage_timeout_secs: 1, max_stage_retries: 0 });
    const result = await promise;
    expect(result.report.success).toBe(true);
  });

  it("a service step is not subject to the stage timeout", async () => {
    const { promise } = run(wf([step("svc", "sleep", ["2"], { mode: "service" })]), { stage_timeout_secs: 1, max_stage_retries: 0 });
    expect((await promise).report.success).toBe(true);
  });

  it("max_parallel_microvms_per_run: 1 runs independent steps one at a time", async () => {
    const { rec, promise } = run(
      wf([step("s1", "sleep", ["0.3"]), step("s2", "sleep", ["0.3"]), step("s3", "sleep", ["0.3"]), step("out", "true", [], { depends_on: ["s1", "s2", "s3"] })]),
      { max_parallel_microvms_per_run: 1 },
    );
    const result = await promise;
    expect(result.report.success).toBe(true);
    expect(rec.maxRunning).toBe(1);
    // every start is followed by that stage's completion before the next start
    const seq = rec.events.filter((e) => e.type === "stage.started" || e.type === "stage.completed").map((e) => `${e.type}:${e.stage_name}`);
    for (let i = 0; i < seq.length; i += 2) {
      expect(seq[i].startsWith("stage.started")).toBe(true);
      expect(seq[i + 1]).toBe(seq[i].replace("started", "completed"));
    }
  });

  it("max_parallel_microvms_per_run: 2 allows two at once, never three", async () => {
    const { rec, promise } = run(
      wf([step("s1", "sleep", ["0.5"]), step("s2", "sleep", ["0.5"]), step("s3", "sleep", ["0.5"]), step("out", "true", [], { depends_on: ["s1", "s2", "s3"] })]),
      { max_parallel_microvms_per_run: 2 },
    );
    await promise;
    expect(rec.maxRunning).toBe(2);
  });
});

describe("engine: cancel", () => {
  it("aborting the signal stops a sleep 300 step promptly", async () => {
    const ac = new AbortController();
    const { rec, promise } = run(wf([step("nap", "sleep", ["300"]), step("after", "echo", ["x"], { depends_on: ["nap"] })]), { max_stage_retries: 3 }, ac.signal);
    await waitFor(() => rec.of("stage.started", "nap").length > 0, "nap to start");
    ac.abort(new Error("run cancelled"));
    const result = await promise; // bounded by the test timeout, far below 300 s
    expect(result.report.success).toBe(false);
    // no retry after a cancel
    expect(rec.of("stage.started", "nap")).toHaveLength(1);
    expect(rec.of("stage.started", "after")).toHaveLength(0);
    const failed = rec.of("stage.failed", "nap");
    expect(failed).toHaveLength(1);
    expect(failed[0].payload!.error).toBe("run cancelled");
    expect(failed[0].payload!.exit_code).not.toBe(0);
  });

  it("cancel while a stage waits for a slot releases it without running it", async () => {
    const ac = new AbortController();
    const { rec, promise } = run(wf([step("a", "sleep", ["300"]), step("b", "sleep", ["300"]), step("out", "true", [], { depends_on: ["a", "b"] })]), { max_parallel_microvms_per_run: 1 }, ac.signal);
    await waitFor(() => rec.of("stage.started").length > 0, "a stage to start");
    ac.abort(new Error("run cancelled"));
    await promise;
    expect(rec.of("stage.started")).toHaveLength(1);
  });
});

describe("engine: pipeline and agent", () => {
  const box = (name: string, mock?: BoxSpec["mock"]): BoxSpec => ({ name, prompt: `do ${name}`, mock });
  function pipeline(boxes: BoxSpec[], stages: PipelineStageSpec[]): RunSpec {
    return { api_version: "v1", kind: "pipeline", name: "p", sandbox: SANDBOX, pipeline: { boxes, stages } };
  }

  it("runs box → fan_out → box in order with groups and pipes output along", async () => {
    const ok = { result_json: { status: "ok" } };
    const { rec, promise } = run(
      pipeline([box("a", ok), box("b", ok), box("c", ok), box("d", ok)], [
        { type: "box", name: "a" },
        { type: "fan_out", boxes: ["b", "c"] },
        { type: "box", name: "d" },
      ]),
    );
    const result = await promise;
    expect(result.report.success).toBe(true);
    expect(result.publishStage).toBe("d");
    expect(result.mustPublish).toBe(true);
    expect(rec.plans[0].map((p) => [p.name, p.group, p.depends_on])).toEqual([
      ["a", null, []],
      ["b", "fan_out-1", ["a"]],
      ["c", "fan_out-1", ["a"]],
      ["d", null, ["b", "c"]],
    ]);
    const started = rec.of("stage.started").map((e) => e.stage_name);
    expect(started[0]).toBe("a");
    expect(started[3]).toBe("d");
    expect(rec.of("box.started")).toHaveLength(4);
    expect(result.report.output).toBe("[mock] do d\n");
  });

  it("skips the remaining boxes after a failure", async () => {
    const { rec, promise } = run(pipeline([box("a", { exit_code: 3 }), box("b")], [{ type: "box", name: "a" }, { type: "box", name: "b" }]), { max_stage_retries: 0 });
    const result = await promise;
    expect(result.report.success).toBe(false);
    expect(result.exitCode).toBe(3);
    expect(rec.of("stage.skipped", "b")).toHaveLength(1);
  });

  it("agent runs as stage main and hands back result.json and artifacts", async () => {
    const spec: RunSpec = {
      api_version: "v1",
      kind: "agent",
      name: "ag",
      sandbox: SANDBOX,
      agent: { prompt: "hi", skills: ["agent:claude-code", "lint"], mock: { result_json: { status: "ok", artifacts: [{ name: "n.md" }] }, artifacts: { "n.md": "# n" } } },
    };
    const { rec, promise } = run(spec);
    const result = await promise;
    expect(result.report.success).toBe(true);
    expect(result.report.output).toBe("[mock] hi\n");
    expect(result.publishStage).toBe("main");
    expect(rec.outputs).toEqual([{ stage: "main", result: Buffer.from(JSON.stringify({ status: "ok", artifacts: [{ name: "n.md" }] })), artifacts: ["n.md"] }]);
    expect(rec.of("skill.mounted").map((e) => [e.skill_type, e.skill_id])).toEqual([
      ["agent", "claude-code"],
      ["skill", "lint"],
    ]);
  });
});
