import { outputStepOf } from "../spec/plan.js";
import type { RunSpec, WorkflowStep } from "../spec/types.js";
import { runStage, type StageContext, type StageOutcome } from "./stage.js";
import type { EngineResult } from "./types.js";

/**
 * Executes a workflow DAG: every step whose dependencies succeeded starts at once
 * (the parallel cap is enforced by the stage runner), a step whose dependency
 * failed or was skipped is skipped, and the output step decides the run.
 */
export async function runWorkflow(ctx: StageContext, spec: RunSpec): Promise<EngineResult> {
  const wf = spec.workflow!;
  const output = outputStepOf(wf);
  const { hooks } = ctx;
  hooks.planStages(wf.steps.map((s) => ({ name: s.name, depends_on: s.depends_on ?? [], group: null })));
  hooks.event({
    type: "workflow.planned",
    message: `workflow ${spec.name} planned: ${wf.steps.length} step(s), output step ${output}`,
    payload: { steps: wf.steps.map((s) => s.name), output_step: output },
  });
  for (const s of wf.steps)
    hooks.event({ type: "stage.queued", message: `stage ${s.name} queued`, payload: { depends_on: s.depends_on ?? [] }, stage_name: s.name });

  const results = new Map<string, StageOutcome | "skipped">();
  const running = new Map<string, Promise<void>>();
  let firstFailure: { step: string; outcome: StageOutcome } | undefined;

  const start = (step: WorkflowStep) => {
    const p = runStage(ctx, {
      name: step.name,
      program: step.run.program,
      args: step.run.args ?? [],
      env: { ...spec.sandbox.env, ...step.run.env },
      stdin: stdinFor(step, results, ctx.input),
      timeoutSecs: step.mode === "service" ? null : step.timeout_secs,
    }).then((r) => {
      results.set(step.name, r);
      if (r.exitCode !== 0 && !firstFailure) firstFailure = { step: step.name, outcome: r };
      running.delete(step.name);
    });
    running.set(step.name, p);
  };

  while (results.size < wf.steps.length && !ctx.signal.aborted) {
    let progressed = false;
    for (const step of wf.steps) {
      if (results.has(step.name) || running.has(step.name)) continue;
      const deps = step.depends_on ?? [];
      const bad = deps.find((d) => results.has(d) && (results.get(d) === "skipped" || (results.get(d) as StageOutcome).exitCode !== 0));
      if (bad) {
        results.set(step.name, "skipped");
        hooks.stage(step.name, { status: "skipped" });
        hooks.event({ type: "stage.skipped", message: `stage ${step.name} skipped: dependency ${bad} did not succeed`, payload: { reason: `dependency ${bad} did not succeed` }, stage_name: step.name });
        progressed = true;
      } else if (deps.every((d) => results.has(d))) {
        start(step);
        progressed = true;
      }
    }
    if (!progressed) {
      if (!running.size) break; // unreachable for a checked DAG; guards against a spin
      await Promise.race(running.values());
    }
  }
  await Promise.all(running.values());

  const out = results.get(output);
  const outcome = out && out !== "skipped" ? out : undefined;
  const success = !!outcome && outcome.exitCode === 0;
  const decidingCode = outcome ? outcome.exitCode : (firstFailure?.outcome.exitCode ?? null);
  return {
    report: {
      name: spec.name,
      kind: "workflow",
      success,
      output: outcome ? outcome.stdout.toString("utf8") : "",
      stages: wf.steps.length,
      total_cost_usd: 0,
      input_tokens: 0,
      output_tokens: 0,
    },
    exitCode: decidingCode,
    error: success ? undefined : (outcome?.error ?? (firstFailure ? `stage ${firstFailure.step} failed: ${firstFailure.outcome.error}` : `output step ${output} did not run`)),
    publishStage: output,
    mustPublish: wf.steps.length === 1,
  };
}

/** stdin: the named step's stdout, else the stdout of every dependency in order; a first step gets the run's input. */
function stdinFor(step: WorkflowStep, results: Map<string, StageOutcome | "skipped">, runInput: Buffer | undefined): Buffer {
  if (!step.run.stdin_from && !step.depends_on?.length) return runInput ?? Buffer.alloc(0);
  const from = step.run.stdin_from ? [step.run.stdin_from] : (step.depends_on ?? []);
  return Buffer.concat(from.map((d) => results.get(d)).filter((r): r is StageOutcome => !!r && r !== "skipped").map((r) => r.stdout));
}
