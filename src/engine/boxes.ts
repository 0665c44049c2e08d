import type { BoxSpec, RunSpec } from "../spec/types.js";
import { agentStage, UsageTally, type AgentBox } from "./agent-box.js";
import { runStage, type StageContext, type StageOutcome } from "./stage.js";
import type { EngineResult, RunReport } from "./types.js";

/** One agent box as one stage (./agent-box.ts builds it for the sandbox at hand). */
function runBox(ctx: StageContext, spec: RunSpec, name: string, box: AgentBox, stdin: Buffer, tally: UsageTally, group?: string): Promise<StageOutcome> {
  const s = agentStage(ctx, spec, name, box, stdin, tally, group);
  return runStage(s.ctx, s.job);
}

function mountSkills(ctx: StageContext, box: string, skills: string[] = []): void {
  for (const skill of skills) {
    const [type, id] = skill.includes(":") ? skill.split(/:(.*)/s, 2) : ["skill", skill];
    ctx.hooks.event({ type: "skill.mounted", message: `skill ${skill} mounted for ${box}`, box_name: box, skill_id: id, skill_type: type });
  }
}

/** The run report; token counts and cost are what the boxes' result files reported, summed. */
function report(spec: RunSpec, success: boolean, output: string, stages: number, tally: UsageTally): RunReport {
  return { name: spec.name, kind: spec.kind, success, output, stages, ...tally.total() };
}

/** `kind: agent`: one box, run as the stage `main`. */
export async function runAgent(ctx: StageContext, spec: RunSpec): Promise<EngineResult> {
  const agent = spec.agent!;
  ctx.hooks.planStages([{ name: "main", depends_on: [], group: null }]);
  ctx.hooks.event({ type: "box.started", message: `agent box ${spec.name} started`, box_name: spec.name });
  mountSkills(ctx, spec.name, agent.skills);
  ctx.hooks.event({ type: "stage.queued", message: "stage main queued", payload: { depends_on: [] }, stage_name: "main" });
  const tally = new UsageTally();
  const r = await runBox(ctx, spec, "main", agent, ctx.input ?? Buffer.alloc(0), tally);
  return {
    report: report(spec, r.exitCode === 0, r.stdout.toString("utf8"), 1, tally),
    exitCode: r.exitCode,
    error: r.exitCode === 0 ? undefined : r.error,
    publishStage: "main",
    mustPublish: true,
  };
}

/**
 * `kind: pipeline`: stages in order; a `box` stage runs one box, a `fan_out` stage
 * runs its boxes concurrently (bounded by the parallel cap). Each stage's stdout is
 * the next stage's stdin; after a failure the remaining boxes are skipped.
 */
export async function runPipeline(ctx: StageContext, spec: RunSpec): Promise<EngineResult> {
  const p = spec.pipeline!;
  const boxes = new Map<string, BoxSpec>(p.boxes.map((b) => [b.name, b]));
  const groups = p.stages.map((st, i) => ({ names: st.type === "box" ? [st.name] : st.boxes, group: st.type === "fan_out" ? `fan_out-${i}` : undefined }));
  let prev: string[] = [];
  ctx.hooks.planStages(
    groups.flatMap((g) => {
      const plans = g.names.map((n) => ({ name: n, depends_on: prev, group: g.group ?? null }));
      prev = g.names;
      return plans;
    }),
  );
  for (const b of p.boxes) {
    ctx.hooks.event({ type: "box.started", message: `box ${b.name} planned`, box_name: b.name });
    mountSkills(ctx, b.name, b.skills);
  }
  prev = [];
  for (const g of groups) {
    for (const n of g.names) ctx.hooks.event({ type: "stage.queued", message: `stage ${n} queued`, payload: { depends_on: prev }, stage_name: n, box_name: n, group_id: g.group });
    prev = g.names;
  }

  const tally = new UsageTally();
  let input = ctx.input ?? Buffer.alloc(0);
  let last: StageOutcome | undefined;
  let failed: { name: string; outcome: StageOutcome } | undefined;
  for (const [gi, g] of groups.entries()) {
    if (failed || ctx.signal.aborted) {
      for (const n of g.names) {
        ctx.hooks.stage(n, { status: "skipped" });
        const reason = failed ? `box ${failed.name} failed` : "run cancelled";
        ctx.hooks.event({ type: "stage.skipped", message: `stage ${n} skipped: ${reason}`, payload: { reason }, stage_name: n, box_name: n, group_id: g.group });
      }
      continue;
    }
    const outcomes = await Promise.all(g.names.map((n) => runBox(ctx, spec, n, boxes.get(n)!, input, tally, g.group)));
    const bad = outcomes.findIndex((o) => o.exitCode !== 0);
    if (bad >= 0) failed = { name: g.names[bad], outcome: outcomes[bad] };
    input = Buffer.concat(outcomes.map((o) => o.stdout));
    if (gi === groups.length - 1) last = outcomes[outcomes.length - 1];
  }
  const lastNames = groups[groups.length - 1].names;
  return {
    report: report(spec, !failed && !!last, input.toString("utf8"), p.boxes.length, tally),
    exitCode: failed ? failed.outcome.exitCode : (last?.exitCode ?? null),
    error: failed ? `box ${failed.name} failed: ${failed.outcome.error}` : undefined,
    publishStage: lastNames[lastNames.length - 1],
    mustPublish: true,
  };
}
