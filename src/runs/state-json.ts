import type { RunFile, RunState } from "../run-model.js";
import type { LoadedRun } from "../store/runs.js";

/** Stands for the events in a state encoded without them (a JSON string no run can hold as this key's value). */
const EVENTS_MARK = "\u0000events\u0000";

/** A terminal run's RunState as JSON, as Run.toState encodes it, with its log's lines as the events. */
export function stateJson(loaded: LoadedRun): string {
  const { stages, stage_states: _, ...rest } = loaded.file;
  const state = {
    ...rest,
    events: EVENTS_MARK,
    active_stage_count: stages?.filter((s) => s.status === "running").length ?? 0,
    active_microvm_count: 0,
    stage_states: stageStates(loaded.file),
  };
  const text = JSON.stringify(state);
  const mark = `"events":${JSON.stringify(EVENTS_MARK)}`;
  const at = text.indexOf(mark);
  const events = loaded.lines && loaded.lines.length === loaded.events.length ? loaded.lines.join(",") : loaded.events.map((e) => JSON.stringify(e)).join(",");
  return text.slice(0, at) + `"events":[${events}]` + text.slice(at + mark.length);
}

/** RunState's stage_states: from the stage records, else as a Rust run file had them. */
export function stageStates(file: RunFile): RunState["stage_states"] {
  const stages = file.stages;
  return stages?.length ? Object.fromEntries(stages.map((s) => [s.name, { status: s.status, attempt: s.attempt, exit_code: s.exit_code }])) : (file.stage_states ?? null);
}
