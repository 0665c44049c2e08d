/** Legacy dotted event names → v2 PascalCase names (openapi.yaml pairs them in EventType / EventTypeV2; other names are split on "." and "_" and capitalised). */
const V2_NAMES: Record<string, string> = {
  "run.started": "RunStarted",
  "run.finished": "RunCompleted",
  "run.failed": "RunFailed",
  "run.cancelled": "RunCancelled",
  "run.spec.loaded": "SpecLoaded",
  "spec.parse_failed": "SpecParseFailed",
  "env.provisioned": "EnvironmentProvisioned",
  "box.started": "BoxStarted",
  "skill.mounted": "SkillMounted",
  "workflow.planned": "WorkflowPlanned",
  "log.chunk": "LogChunk",
  "log.closed": "LogClosed",
  "log.truncated": "LogTruncated",
  "stage.queued": "StageQueued",
  "stage.started": "StageStarted",
  "stage.completed": "StageSucceeded",
  "stage.failed": "StageFailed",
  "stage.skipped": "StageSkipped",
  "stage.output": "StageOutput",
  "stage.output_truncated": "StageOutputTruncated",
  "stage.artifacts_dropped": "StageArtifactsDropped",
  "microvm.spawned": "MicroVmSpawned",
  "microvm.exited": "MicroVmExited",
};

export function v2EventName(legacy: string): string {
  return (
    V2_NAMES[legacy] ??
    legacy
      .split(/[._]/)
      .filter(Boolean)
      .map((p) => p[0].toUpperCase() + p.slice(1))
      .join("")
  );
}

/** Input spellings accepted for run statuses; output always uses the canonical ones. */
export function normaliseStatus(s: string): string {
  if (s === "completed") return "succeeded";
  if (s === "canceled") return "cancelled";
  return s;
}
