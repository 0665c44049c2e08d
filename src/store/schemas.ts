import type { ErrorObject, ValidateFunction } from "ajv";
import { lazyRequire, once } from "../lazy.js";
import { NOT_IN_RUN_FILE } from "../run-model.js";
import { schemaErrorMessages } from "../schema-errors.js";

/**
 * Shape checks for what is read back from the state dir, compiled from openapi.yaml's
 * component schemas (RunEvent, RunState, SessionMessage) so the files are held to the
 * same contract the API serves. OpenAPI 3.0's `nullable` is an ajv keyword. A file
 * that fails its check is quarantined instead of being loaded.
 */
export interface StateSchemas {
  /** A `run.json` (or a Rust run file without its events, after normalisation). */
  runFile(v: unknown): string | null;
  /** One event of a run's log. */
  event(v: unknown): string | null;
  /** One line of a session log. */
  sessionMessage(v: unknown): string | null;
}

/** RunState minus what run.json does not hold (events, live counters), plus stage records. */
function runFileSchema(runState: Record<string, unknown>): Record<string, unknown> {
  const notStored = new Set<string>(NOT_IN_RUN_FILE);
  return {
    ...runState,
    required: (runState.required as string[]).filter((k) => !notStored.has(k)),
    properties: { ...(runState.properties as object), stages: { type: "array", items: { $ref: "#/components/schemas/StageRecord" } } },
  };
}

/** The first problem of a file that fails its check: enough to say why it was quarantined. */
const explain = (errors: ErrorObject[] | null | undefined): string =>
  schemaErrorMessages(errors, { at: (instancePath) => instancePath || "(top level)", max: 1 })[0] ?? "does not match its schema";

export function compileStateSchemas(components: Record<string, unknown>): StateSchemas {
  // The shared document's schemas, read only (ajv does not change them): RunFile joins a shallow copy.
  const schemas = { ...components };
  for (const name of ["RunEvent", "RunState", "SessionMessage", "StageRecord"]) if (!schemas[name]) throw new Error(`openapi.yaml has no ${name} schema`);
  schemas.RunFile = runFileSchema(schemas.RunState as Record<string, unknown>);
  // Compiled on first use: an empty state dir has nothing to check at start-up.
  const ajv = once(() => {
    const { Ajv } = lazyRequire<typeof import("ajv")>("ajv")();
    const instance = new Ajv({ strict: false, allErrors: false });
    lazyRequire<typeof import("ajv-formats")>("ajv-formats")().default(instance);
    instance.addSchema({ $id: "voidbox-state", components: { schemas } });
    return instance;
  });
  const check = (name: string) => {
    const validator = once((): ValidateFunction => ajv().compile({ $ref: `voidbox-state#/components/schemas/${name}` }));
    return (x: unknown) => {
      const v = validator();
      return v(x) ? null : explain(v.errors);
    };
  };
  return { runFile: check("RunFile"), event: check("RunEvent"), sessionMessage: check("SessionMessage") };
}
