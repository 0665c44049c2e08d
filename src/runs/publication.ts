import type { ArtifactPublication } from "../run-model.js";

/** What a run's stages handed back, per stage, as stored. */
export interface StageOutputs {
  result: Buffer;
  artifacts: Array<Pick<ArtifactPublication["manifest"][number], "name" | "media_type" | "size_bytes">>;
}

export interface PublicationInput {
  runId: string;
  outputs: Map<string, StageOutputs>;
  /** The stage whose result.json decides publication (output step, agent, last box). */
  publishStage?: string;
  /** Agent runs, pipelines and single-step workflows must publish a valid result.json. */
  mustPublish: boolean;
  now: string;
}

export interface PublicationOutcome {
  publication: ArtifactPublication;
  /** Set when a run that must publish could not: the run fails with this error. */
  problem?: string;
}

/** Checks a result.json: a JSON object with a string `status`. Returns the problem, if any. */
export function resultProblem(stage: string, bytes: Buffer | undefined): string | undefined {
  if (!bytes) return `structured output missing: stage ${stage} wrote no /workspace/result.json`;
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    return `structured output malformed: result.json of stage ${stage} is not valid JSON`;
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) return `structured output malformed: result.json of stage ${stage} is not a JSON object`;
  if (typeof (doc as { status?: unknown }).status !== "string")
    return `structured output malformed: result.json of stage ${stage} has no string "status"`;
  return undefined;
}

/** Decides `artifact_publication` (openapi.yaml ArtifactPublication). */
export function decidePublication(input: PublicationInput): PublicationOutcome {
  const manifest: ArtifactPublication["manifest"] = [];
  for (const [stage, out] of input.outputs) {
    const base = `/v1/runs/${input.runId}/stages/${stage}`;
    manifest.push({ name: "result.json", stage, media_type: "application/json", size_bytes: out.result.length, retrieval_path: `${base}/output-file` });
    for (const a of out.artifacts)
      manifest.push({ name: a.name, stage, media_type: a.media_type, size_bytes: a.size_bytes, retrieval_path: `${base}/artifacts/${a.name}` });
  }
  const decisive = input.publishStage ? input.outputs.get(input.publishStage)?.result : undefined;
  const problem = input.publishStage ? resultProblem(input.publishStage, decisive) : undefined;
  if (input.mustPublish && problem) return { publication: { status: "failed", error: problem, manifest }, problem };
  if (!manifest.length) return { publication: { status: "not_started", manifest } };
  if (decisive && problem) return { publication: { status: "failed", error: problem, manifest } };
  return { publication: { status: "published", published_at: input.now, manifest } };
}
