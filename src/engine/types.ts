import type { components } from "../../generated/api.js";
import type { StageRecord } from "../run-model.js";

export type RunPolicy = Required<components["schemas"]["RunPolicy"]>;
export type RunReport = components["schemas"]["RunReport"];
type EventLevel = components["schemas"]["RunEvent"]["level"];

export const DEFAULT_POLICY: RunPolicy = {
  max_parallel_microvms_per_run: 4,
  max_stage_retries: 3,
  stage_timeout_secs: 3600,
  cancel_grace_period_secs: 30,
};

/** Optional context fields of a RunEvent. */
export const EVENT_CONTEXT_KEYS = ["box_name", "skill_id", "skill_type", "environment_id", "mode", "stream", "stage_name", "group_id"] as const;
type EventContext = { [K in (typeof EVENT_CONTEXT_KEYS)[number]]?: NonNullable<components["schemas"]["RunEvent"][K]> };

/** An event the engine reports; the run service stamps ids, seq and time on it. */
export interface EngineEvent extends EventContext {
  type: string;
  message: string;
  level?: EventLevel;
  payload?: Record<string, unknown> | null;
}

/** What a plan fixes of each stage (the run service keeps it for stage_states and GET …/stages): its name and place in the graph. */
export type StagePlan = Pick<StageRecord, "name" | "depends_on" | "group">;

/** A stage's progress: any of its record's other fields (the plan's are fixed once planned). */
export type StagePatch = Partial<Omit<StageRecord, keyof StagePlan>>;

export interface StoredArtifact {
  name: string;
  media_type: string;
  bytes: Buffer;
}

export interface EngineHooks {
  event(e: EngineEvent): void;
  planStages(stages: StagePlan[]): void;
  stage(name: string, patch: StagePatch): void;
  /** +1 when a micro-VM starts, -1 when it is gone. */
  vmDelta(delta: 1 | -1): void;
  /** A stage left /workspace/result.json (bytes as they were) and artifacts. */
  output(stage: string, resultJson: Buffer, artifacts: StoredArtifact[]): void;
}

export interface EngineResult {
  report: RunReport;
  /** Exit code that decided the run (output step or failing stage). */
  exitCode: number | null;
  /** Set when the run failed for a reason other than an unsuccessful report. */
  error?: string;
  /** Stage whose result.json the run publishes (agent/pipeline/single-step workflow). */
  publishStage?: string;
  /** Whether the run kind must publish a valid result.json to succeed. */
  mustPublish: boolean;
}
