import { providerEndpoint } from "./provider.js";
import { workspaceRelative } from "../sandbox/workspace.js";
import type { RunSpec, WorkflowSpec } from "./types.js";
import { SpecError } from "./errors.js";

/** Structural checks a JSON Schema cannot express: names, references, DAG shape. */
export function checkPlan(spec: RunSpec): void {
  if (spec.kind === "workflow" && spec.workflow) checkWorkflow(spec.workflow);
  if (spec.kind === "agent" && spec.agent?.output_file !== undefined) agentResultPath(spec.agent.output_file);
  if (spec.kind === "agent" && spec.agent?.provider) providerEndpoint(spec.agent.provider, "agent/provider");
  if (spec.kind === "pipeline" && spec.pipeline) {
    const boxes = new Set<string>();
    for (const [i, b] of spec.pipeline.boxes.entries()) {
      if (b.provider) providerEndpoint(b.provider, `pipeline/boxes/${i}/provider`);
      if (boxes.has(b.name)) throw new SpecError(`pipeline/boxes: duplicate box name ${b.name}`);
      boxes.add(b.name);
    }
    const used = new Set<string>();
    for (const [i, st] of spec.pipeline.stages.entries()) {
      const names = st.type === "box" ? [st.name] : st.boxes;
      for (const n of names) {
        if (!boxes.has(n)) throw new SpecError(`pipeline/stages/${i}: unknown box ${n}`);
        if (used.has(n)) throw new SpecError(`pipeline/stages/${i}: box ${n} is used twice`);
        used.add(n);
      }
    }
  }
}

function checkWorkflow(wf: WorkflowSpec): void {
  const byName = new Map(wf.steps.map((s) => [s.name, s]));
  if (byName.size !== wf.steps.length) {
    const seen = new Set<string>();
    for (const s of wf.steps) {
      if (seen.has(s.name)) throw new SpecError(`workflow/steps: duplicate step name ${s.name}`);
      seen.add(s.name);
    }
  }
  for (const [i, s] of wf.steps.entries()) {
    for (const d of s.depends_on ?? []) {
      if (!byName.has(d)) throw new SpecError(`workflow/steps/${i}/depends_on: unknown dependency ${d} of step ${s.name}`);
      if (d === s.name) throw new SpecError(`workflow/steps/${i}/depends_on: step ${s.name} depends on itself`);
    }
    const from = s.run.stdin_from;
    if (from !== undefined && !(s.depends_on ?? []).includes(from))
      throw new SpecError(`workflow/steps/${i}/run/stdin_from: ${from} must be one of the step's depends_on`);
    if (s.mode === "service" && s.timeout_secs !== undefined)
      throw new SpecError(`workflow/steps/${i}: timeout_secs cannot be combined with mode: service`);
  }
  // The output step's result is also published as stage `main`; another step may not take that name.
  if (byName.has("main") && outputStepOf(wf) !== "main")
    throw new SpecError(`workflow/steps: the name main is reserved for the output step's published result`);
  if (wf.output_step !== undefined && !byName.has(wf.output_step))
    throw new SpecError(`workflow/output_step: unknown step ${wf.output_step}`);
  // Cycle check: Kahn's algorithm; whatever is left over sits on a cycle.
  const indeg = new Map(wf.steps.map((s) => [s.name, (s.depends_on ?? []).length]));
  const ready = wf.steps.filter((s) => !s.depends_on?.length).map((s) => s.name);
  let done = 0;
  while (ready.length) {
    const n = ready.pop()!;
    done++;
    for (const s of wf.steps)
      if (s.depends_on?.includes(n)) {
        const k = indeg.get(s.name)! - 1;
        indeg.set(s.name, k);
        if (k === 0) ready.push(s.name);
      }
  }
  if (done !== wf.steps.length) {
    const cyclic = [...indeg].filter(([, k]) => k > 0).map(([n]) => n);
    throw new SpecError(`workflow/steps: dependency cycle among ${cyclic.join(", ")}`);
  }
  outputStepOf(wf);
}

/** The output step: `output_step`, else the single leaf, else an error. */
export function outputStepOf(wf: WorkflowSpec): string {
  if (wf.output_step) return wf.output_step;
  const leaves = wf.steps.filter((s) => !wf.steps.some((o) => o.depends_on?.includes(s.name)));
  if (leaves.length === 1) return leaves[0].name;
  throw new SpecError(
    `workflow/output_step: required when the workflow has ${leaves.length} leaf steps (${leaves.map((l) => l.name).join(", ")})`,
  );
}

/** The agent's result file as a path relative to /workspace. */
export function agentResultPath(p: string): string {
  const rel = workspaceRelative(p);
  if (rel === null) throw new SpecError(`agent/output_file: ${p} must be a file inside /workspace`);
  return rel;
}
