import { describe, it, expect } from "vitest";
import { runEngine } from "../../src/engine/index.js";
import { DEFAULT_POLICY, type EngineHooks } from "../../src/engine/types.js";
import { MockSandbox } from "../../src/sandbox/mock.js";
import type { Sandbox, StageVm } from "../../src/sandbox/types.js";
import type { RunSpec } from "../../src/spec/types.js";

const SANDBOX = { mode: "mock" as const, memory_mb: 512, vcpus: 1, network: false, env: {} };
const hooks: EngineHooks = { event: () => {}, planStages: () => {}, stage: () => {}, vmDelta: () => {}, output: () => {} };

/** The mock sandbox, recording the stdin of every command by the box/step that ran it (its prompt or program+args). */
function recording(): { sandbox: Sandbox; stdin: Array<{ what: string; stdin: string }> } {
  const inner = new MockSandbox();
  const stdin: Array<{ what: string; stdin: string }> = [];
  const sandbox: Sandbox = {
    kind: "mock",
    async open(opts) {
      const vm = await inner.open(opts);
      const wrapped: StageVm = {
        exec: (cmd) => {
          stdin.push({ what: [cmd.program, ...cmd.args].join(" "), stdin: cmd.stdin.toString("utf8") });
          return vm.exec(cmd);
        },
        readFile: (p, max) => vm.readFile(p, max),
        stop: (g) => vm.stop(g),
      };
      return wrapped;
    },
  };
  return { sandbox, stdin };
}

const go = (spec: RunSpec, sandbox: Sandbox, input?: Buffer) =>
  runEngine({ runId: "r1", spec, policy: { ...DEFAULT_POLICY, max_stage_retries: 0 }, sandbox, signal: new AbortController().signal, hooks, now: Date.now, input });

describe("engine: the run's input", () => {
  it("is the stdin of a workflow's first steps; the others read their dependencies", async () => {
    const rec = recording();
    const spec: RunSpec = {
      api_version: "v1",
      kind: "workflow",
      name: "w",
      sandbox: SANDBOX,
      workflow: {
        steps: [
          { name: "a", run: { program: "cat" } },
          { name: "b", run: { program: "tr", args: ["a-z", "A-Z"] } },
          { name: "c", depends_on: ["a", "b"], run: { program: "cat" } },
        ],
      },
    };
    const r = await go(spec, rec.sandbox, Buffer.from("in\n"));
    expect(r.report.output).toBe("in\nIN\n");
    expect(rec.stdin).toEqual(expect.arrayContaining([{ what: "cat", stdin: "in\n" }, { what: "tr a-z A-Z", stdin: "in\n" }, { what: "cat", stdin: "in\nIN\n" }]));
  });

  it("without input, first steps get an empty stdin (as before)", async () => {
    const rec = recording();
    const spec: RunSpec = { api_version: "v1", kind: "workflow", name: "w", sandbox: SANDBOX, workflow: { steps: [{ name: "a", run: { program: "cat" } }] } };
    expect((await go(spec, rec.sandbox)).report.output).toBe("");
    expect(rec.stdin).toEqual([{ what: "cat", stdin: "" }]);
  });

  it("is the agent's stdin, and a pipeline's first stage's (the next stages get the previous stdout)", async () => {
    const agent = recording();
    const spec: RunSpec = { api_version: "v1", kind: "agent", name: "ag", sandbox: SANDBOX, agent: { prompt: "go", mock: { result_json: { status: "ok" } } } };
    await go(spec, agent.sandbox, Buffer.from("task"));
    expect(agent.stdin.map((s) => s.stdin)).toEqual(["task"]);

    const pipe = recording();
    const p: RunSpec = {
      api_version: "v1",
      kind: "pipeline",
      name: "p",
      sandbox: SANDBOX,
      pipeline: {
        boxes: [
          { name: "one", prompt: "first", mock: { result_json: { status: "ok" } } },
          { name: "two", prompt: "second", mock: { result_json: { status: "ok" } } },
        ],
        stages: [
          { type: "box", name: "one" },
          { type: "box", name: "two" },
        ],
      },
    };
    await go(p, pipe.sandbox, Buffer.from("brief"));
    expect(pipe.stdin[0]).toMatchObject({ stdin: "brief" });
    expect(pipe.stdin[0].what).toContain("first");
    expect(pipe.stdin[1].what).toContain("second");
    expect(pipe.stdin[1].stdin).not.toBe("brief");
  });
});
