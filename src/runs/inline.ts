import path from "node:path";
import type { components } from "../../generated/api.js";
import { ApiError } from "../errors.js";
import type { Limits } from "../limits.js";
import { INLINE_SPEC_FIELD, parseInlineSpec, SpecError } from "../spec/load.js";
import type { RunSpec } from "../spec/types.js";
import { resolveGuestStorage } from "../sandbox/storage.js";
import { ensureDir, writeFileAtomic } from "../store/fsutil.js";
import type { RunStore } from "../store/runs.js";

type CreateRunRequest = components["schemas"]["CreateRunRequest"];

/** The `file` of a run created with an inline spec: the file in its run directory that holds the spec. */
export const INLINE_SPEC_FILE = "inline:spec.json";

/** What a create request carries besides a spec file path, checked. */
export interface RunInputs {
  /** The inline spec, validated (defaults applied), and as the client sent it, encoded as JSON. */
  inline?: { spec: RunSpec; json: string };
  /** The run's input (stdin of its first stages). */
  input?: Buffer;
}

/** Checks `spec` and `input` of a create request; bad ones are 400 INVALID_SPEC naming the field. */
export function checkRunInputs(req: CreateRunRequest, limits: Pick<Limits, "maxRunInputBytes">): RunInputs {
  const out: RunInputs = {};
  if (req.spec !== undefined) {
    try {
      out.inline = parseInlineSpec(req.spec);
    } catch (e) {
      if (e instanceof SpecError) throw new ApiError("INVALID_SPEC", e.message);
      throw e;
    }
  }
  if (req.input !== undefined) {
    const input = Buffer.from(req.input, "utf8");
    if (input.length > limits.maxRunInputBytes)
      throw new ApiError("INVALID_SPEC", `body/input: is ${input.length} bytes (limit ${limits.maxRunInputBytes})`);
    out.input = input;
  }
  return out;
}

/** An inline spec's image and mounts must exist and be allowed: else 400 INVALID_SPEC naming the field. */
export function checkInlineStorage(spec: RunSpec, stateDir: string, limits: Pick<Limits, "mountRoots">): void {
  try {
    resolveGuestStorage(spec.sandbox, { stateDir, mountRoots: limits.mountRoots }, `${INLINE_SPEC_FIELD}/sandbox`);
  } catch (e) {
    if (e instanceof SpecError) throw new ApiError("INVALID_SPEC", e.message);
    throw e;
  }
}

/**
 * Stores the inline spec (`spec.json`) and the input (`input`) in the run's directory,
 * atomically and durably, before run.json exists: a crash in between leaves a directory
 * without run.json, which startup removes as an unacknowledged create.
 */
export function storeRunInputs(store: RunStore, runId: string, inputs: RunInputs): void {
  if (!inputs.inline && !inputs.input) return;
  const dir = path.join(store.runsDir, runId);
  ensureDir(dir);
  if (inputs.inline) writeFileAtomic(path.join(dir, "spec.json"), inputs.inline.json);
  if (inputs.input) writeFileAtomic(path.join(dir, "input"), inputs.input);
}
