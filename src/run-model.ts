import type { components } from "../generated/api.js";

export type RunState = components["schemas"]["RunState"];
export type RunEvent = components["schemas"]["RunEvent"];
export type RunStatus = components["schemas"]["RunStatus"];
export type StageView = components["schemas"]["StageView"];
export type ArtifactPublication = components["schemas"]["ArtifactPublication"];

export const TERMINAL: ReadonlySet<RunStatus> = new Set(["succeeded", "failed", "cancelled"]);

/** A stage as the run keeps it (times in ms; rendered as RFC 3339 in StageView). */
export type StageRecord = components["schemas"]["StageRecord"];

/** RunState fields run.json need not hold: the events (they live in the append-only log) and the live counters. */
export const NOT_IN_RUN_FILE = ["events", "active_stage_count", "active_microvm_count", "stage_states"] as const;

/**
 * What `run.json` holds: the RunState without its events (they live in the
 * append-only log) and without the live counters, plus the stage records.
 */
export type RunFile = Omit<RunState, (typeof NOT_IN_RUN_FILE)[number]> & {
  stages?: StageRecord[];
  stage_states?: RunState["stage_states"];
};
