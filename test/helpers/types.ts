// The API's shapes as the tests read them: the types generated from openapi.yaml, by name.
import type { components } from "../../generated/api.js";

type S = components["schemas"];
export type CancelRunResponse = S["CancelRunResponse"];
export type CreateRunResponse = S["CreateRunResponse"];
export type Health = S["Health"];
export type MicroVmSpawnedPayload = S["MicroVmSpawnedPayload"];
export type RunEvent = S["RunEvent"];
export type RunList = S["RunList"];
export type RunPage = S["RunPage"];
export type RunState = S["RunState"];
export type RunStatus = S["RunStatus"];
export type SessionMessage = S["SessionMessage"];
export type StageList = S["StageList"];
export type StructuredOutput = S["StructuredOutput"];

/** Each event type's payload, as openapi.yaml declares it. */
export interface PayloadOf {
  "run.spec.loaded": S["SpecLoadedPayload"];
  "sandbox.selected": S["SandboxSelectedPayload"];
  "workflow.planned": S["WorkflowPlannedPayload"];
  "stage.queued": S["StageQueuedPayload"];
  "stage.started": S["StageStartedPayload"];
  "microvm.spawned": S["MicroVmSpawnedPayload"];
  "microvm.exited": S["MicroVmExitedPayload"];
  "stage.output": S["StageOutputPayload"];
  "stage.output_truncated": S["StageOutputTruncatedPayload"];
  "stage.artifacts_dropped": S["StageArtifactsDroppedPayload"];
  "stage.completed": S["StageSucceededPayload"];
  "stage.failed": S["StageFailedPayload"];
  "stage.skipped": S["StageSkippedPayload"];
  "run.finished": S["RunCompletedPayload"];
  "run.failed": S["RunFailedPayload"];
  "run.cancelled": S["RunCancelledPayload"];
  "log.chunk": S["LogChunkPayload"];
  "log.truncated": S["LogTruncatedPayload"];
}
