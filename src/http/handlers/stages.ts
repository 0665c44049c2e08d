import type { components } from "../../../generated/api.js";
import { ApiError } from "../../errors.js";
import { encodedJson } from "../../json-bytes.js";
import { describeResultJsonFault, resultJsonFault } from "../../runs/result-json.js";
import type { RunService } from "../../runs/service.js";
import type { Handler } from "../handler.js";

type StageList = components["schemas"]["StageList"];

/** `type/subtype` with optional parameters, as HTTP allows it in a header (RFC 9110 section 8.3). */
const MEDIA_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+([ \t]*;[ \t]*[A-Za-z0-9!#$&^_.+-]+=("[ !#-\[\]-~]*"|[A-Za-z0-9!#$&^_.+-]+))*$/;

/** The Content-Type an artifact is served with: its declared media type when it is one (a guest wrote it). */
function servedMediaType(declared: string | undefined): string {
  return declared !== undefined && declared.length <= 255 && MEDIA_TYPE.test(declared) ? declared : "application/octet-stream";
}

export function stageHandlers(runs: RunService) {
  const listRunStages: Handler<"listRunStages"> = ({ params }) => {
    const run = runs.get(params.run_id);
    // satisfies: TypeScript does not check a returned literal for extra fields, this does.
    const list = { run_id: run.id, attempt_id: run.file.attempt_id, updated_at: run.file.updated_at, stages: run.stageViews() } satisfies StageList;
    return { json: list };
  };

  const getStageOutputFile: Handler<"getStageOutputFile"> = ({ params }) => {
    const run = runs.get(params.run_id);
    const bytes = runs.stageResult(run.id, params.stage);
    // Any valid JSON is served; publication asks more of it (runs/result-json.ts judges both).
    const subject = `stage ${params.stage} of run ${run.id}`;
    if (!bytes) throw new ApiError("STRUCTURED_OUTPUT_MISSING", describeResultJsonFault("missing", subject));
    if (resultJsonFault(bytes) === "not_json") throw new ApiError("STRUCTURED_OUTPUT_MALFORMED", describeResultJsonFault("not_json", subject));
    // Served as the guest wrote it once it parses: its fields are the guest's to fill.
    return { raw: encodedJson<components["schemas"]["StructuredOutput"]>(bytes), contentType: "application/json" };
  };

  const getStageArtifact: Handler<"getStageArtifact"> = ({ params }) => {
    const run = runs.get(params.run_id);
    const bytes = runs.stageArtifact(run.id, params.stage, params.name);
    if (!bytes) throw new ApiError("ARTIFACT_NOT_FOUND", `artifact ${params.name} of stage ${params.stage} of run ${run.id} not found`);
    const entry = run.file.artifact_publication?.manifest.find((m) => m.stage === params.stage && m.name === params.name);
    return { raw: bytes, contentType: servedMediaType(entry?.media_type) };
  };

  return { listRunStages, getStageOutputFile, getStageArtifact };
}
