import { DEFAULT_LIMITS, type Limits } from "../limits.js";
import type { Sandbox } from "../sandbox/types.js";
import type { RunSpec } from "../spec/types.js";
import { Semaphore } from "./semaphore.js";
import type { StageContext } from "./stage.js";
import type { EngineHooks, EngineResult, RunPolicy } from "./types.js";
import { runWorkflow } from "./workflow.js";
import { runAgent, runPipeline } from "./boxes.js";

export interface EngineInput {
  runId: string;
  spec: RunSpec;
  policy: RunPolicy;
  sandbox: Sandbox;
  /** Aborted on cancel. */
  signal: AbortSignal;
  hooks: EngineHooks;
  now: () => number;
  /** Output and artifact bounds (default DEFAULT_LIMITS). */
  limits?: Limits;
  /** The run's input: stdin of its first stages. */
  input?: Buffer;
}

/** Executes a run spec as stages in the sandbox, enforcing the policy. */
export function runEngine(input: EngineInput): Promise<EngineResult> {
  const ctx: StageContext = {
    runId: input.runId,
    sandbox: input.sandbox,
    sandboxSpec: input.spec.sandbox,
    policy: input.policy,
    slots: new Semaphore(input.policy.max_parallel_microvms_per_run),
    hooks: input.hooks,
    signal: input.signal,
    now: input.now,
    limits: input.limits ?? DEFAULT_LIMITS,
    input: input.input,
  };
  switch (input.spec.kind) {
    case "workflow":
      return runWorkflow(ctx, input.spec);
    case "pipeline":
      return runPipeline(ctx, input.spec);
    case "agent":
      return runAgent(ctx, input.spec);
  }
}
