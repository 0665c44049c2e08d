import type { ArtifactPublication } from "../run-model.js";
import { describeResultJsonFault, resultJsonFault } from "./result-json.js";

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

/** Checks a result.json for publication: a JSON object with a string `status`. Returns the problem, if any. */
export function resultProblem(stage: string, bytes: Buffer | undefined): string | undefined {
  const fault = resultJsonFault(bytes);
  if (!fault) return undefined;
  return `structured output ${fault === "missing" ? "missing" : "malformed"}: ${describeResultJsonFault(fault, `stage ${stage}`)}`;
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
