import { constants as fsc, promises as fsp } from "node:fs";
import path from "node:path";
import { lazyRequire, once } from "../lazy.js";
import { componentSchemas } from "../openapi-document.js";
import { schemaErrorMessages } from "../schema-errors.js";
import type { RunSpec } from "./types.js";
import { checkPlan } from "./plan.js";
import { SpecError } from "./errors.js";

export { SpecError };

/** Spec files are small documents; anything bigger is refused before parsing. */
export const MAX_SPEC_BYTES = 1024 * 1024;


const yaml = lazyRequire<typeof import("yaml")>("yaml");
/**
 * A spec must carry the block its kind names: a rule OpenAPI 3.0's schema language cannot
 * say (it has no if/then), so it is added to openapi.yaml's RunSpec here (the RunSpec
 * description states it).
 */
const KIND_NAMES_ITS_BLOCK = (["workflow", "pipeline", "agent"] as const).map((kind) => ({
  if: { properties: { kind: { const: kind } } },
  then: { required: [kind] },
}));

/** Compiled on first use: a daemon with no run to create yet does not pay for it. */
const specValidator = once(() => {
  const { Ajv } = lazyRequire<typeof import("ajv")>("ajv")();
  const ajv = new Ajv({ allErrors: true, useDefaults: true, verbose: true, strict: false });
  ajv.addSchema({ $id: "voidbox-api", components: { schemas: componentSchemas() } });
  return ajv.compile<RunSpec>({ allOf: [{ $ref: "voidbox-api#/components/schemas/RunSpec" }, ...KIND_NAMES_ITS_BLOCK] });
});

function describeAjvErrors(errors: Parameters<typeof schemaErrorMessages>[0], root: string): string {
  return schemaErrorMessages(errors, { at: (instancePath) => root + instancePath, max: 5 }).join("; ") || `${root}: invalid`;
}

export interface SpecAccess {
  /** When non-empty, only files whose real path lies under one of these directories are read. */
  roots?: string[];
}

/**
 * One message for every file that cannot be used, whatever the reason (missing,
 * unreadable, not a regular file, outside the spec roots): a client must not learn
 * which host paths exist from it.
 */
function unreadable(file: string, roots: string[]): SpecError {
  return new SpecError(
    `cannot open spec file ${file}: it does not exist, is not readable${roots.length ? ", is outside the allowed spec roots" : ""} or is not a regular file`,
  );
}

const within = (p: string, root: string) => p === root || p.startsWith(root.endsWith("/") ? root : `${root}/`);

/** Whether the opened file (its real path, symlinks resolved) lies under one of the roots. */
async function underRoots(handle: fsp.FileHandle, file: string, roots: string[]): Promise<boolean> {
  let real: string;
  try {
    // The path of what was actually opened: no window for a symlink swap after the check.
    real = await fsp.readlink(`/proc/self/fd/${handle.fd}`);
  } catch {
    real = await fsp.realpath(file).catch(() => "");
  }
  if (!path.isAbsolute(real)) return false;
  for (const root of roots) {
    const r = await fsp.realpath(root).catch(() => null);
    if (r && within(real, r)) return true;
  }
  return false;
}

/**
 * Reads a spec file safely: only regular files (a symlink to a device or a FIFO is
 * refused without blocking, thanks to O_NONBLOCK), under the spec roots when there
 * are any, bounded size, text only.
 */
async function readSpecFile(file: string, roots: string[]): Promise<string> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch {
    throw unreadable(file, roots);
  }
  try {
    if (roots.length && !(await underRoots(handle, file, roots))) throw unreadable(file, roots);
    const st = await handle.stat();
    if (!st.isFile()) throw unreadable(file, roots);
    if (st.size > MAX_SPEC_BYTES) throw new SpecError(`spec file ${file} is ${st.size} bytes (limit ${MAX_SPEC_BYTES})`);
    const buf = Buffer.alloc(MAX_SPEC_BYTES + 1);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    if (bytesRead > MAX_SPEC_BYTES) throw new SpecError(`spec file ${file} is over ${MAX_SPEC_BYTES} bytes`);
    const bytes = buf.subarray(0, bytesRead);
    if (bytes.includes(0)) throw new SpecError(`spec file ${file} is binary, not text`);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new SpecError(`spec file ${file} is not valid UTF-8`);
    }
  } finally {
    await handle.close();
  }
}

/** "line L, column C" of a character offset. */
function lineColumn(text: string, offset: number): string {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const line = before.split("\n").length;
  return `line ${line}, column ${before.length - before.lastIndexOf("\n")}`;
}

/**
 * Parses a spec's text. Parser messages are not passed on as they are: they quote the
 * source (V8's JSON messages and some YAML ones do), and a spec file may be any host
 * file. Errors name the file, the kind of problem and where it is, never its content.
 */
function parseSpecText(text: string, yamlFormat: boolean, file: string, subject = `spec file ${file}`): unknown {
  if (!yamlFormat) {
    try {
      return JSON.parse(text);
    } catch (e) {
      const pos = /\bposition (\d+)/.exec((e as Error).message);
      throw new SpecError(`${subject} is not valid JSON${pos ? ` (at ${lineColumn(text, Number(pos[1]))})` : ""}`);
    }
  }
  const doc = yaml().parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) {
    const err = doc.errors[0];
    const what = err.code.toLowerCase().replace(/_/g, " ");
    throw new SpecError(`${subject} is not valid YAML: ${what} at ${lineColumn(text, err.pos[0])}`);
  }
  try {
    // maxAliasCount bounds alias expansion, so a "billion laughs" document fails fast.
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    const why = /excessive alias count/i.test((e as Error).message) ? "too many alias expansions" : /alias/i.test((e as Error).message) ? "an alias without its anchor" : "it cannot be converted to data";
    throw new SpecError(`${subject} is not usable YAML: ${why}`);
  }
}

/**
 * A document that is not even shaped like a spec (no mapping with api_version) is
 * refused without listing its keys: they are content of whatever file was named.
 */
function checkShape(raw: unknown, file: string): void {
  if (!raw || typeof raw !== "object" || Array.isArray(raw) || !("api_version" in raw))
    throw new SpecError(`invalid spec ${file}: not a run spec (expected a mapping with api_version, kind and name)`);
}

/** Load, validate and plan-check a run spec. Throws SpecError naming the problem. */
export async function loadSpec(file: string, access: SpecAccess = {}): Promise<RunSpec> {
  const text = await readSpecFile(file, access.roots ?? []);
  const raw = parseSpecText(text, /\.ya?ml$/i.test(file), file);
  checkShape(raw, file);
  const validateSpec = specValidator();
  if (!validateSpec(raw)) throw new SpecError(`invalid spec ${file}: ${describeAjvErrors(validateSpec.errors, "spec")}`);
  checkPlan(raw);
  return raw;
}

/** Where an inline spec sits in a create request; its messages name fields under it. */
export const INLINE_SPEC_FIELD = "body/spec";

/**
 * Validates a spec given inline (a parsed object, or YAML/JSON text; YAML is a superset
 * of JSON) the way loadSpec validates a file, with messages naming `body/spec/...`.
 * Returns the spec (defaults applied) and the document as the client sent it, as JSON.
 */
export function parseInlineSpec(value: unknown): { spec: RunSpec; json: string } {
  let raw = value;
  if (typeof value === "string") {
    const bytes = Buffer.byteLength(value);
    if (bytes > MAX_SPEC_BYTES) throw new SpecError(`${INLINE_SPEC_FIELD}: is ${bytes} bytes of text (limit ${MAX_SPEC_BYTES})`);
    raw = parseSpecText(value, true, INLINE_SPEC_FIELD, INLINE_SPEC_FIELD);
  }
  // Encoded before validation: ajv's useDefaults fills the document in.
  const json = JSON.stringify(raw) ?? "null";
  if (Buffer.byteLength(json) > MAX_SPEC_BYTES)
    throw new SpecError(`${INLINE_SPEC_FIELD}: is ${Buffer.byteLength(json)} bytes encoded as JSON (limit ${MAX_SPEC_BYTES})`);
  const validateSpec = specValidator();
  if (!validateSpec(raw)) throw new SpecError(describeAjvErrors(validateSpec.errors, INLINE_SPEC_FIELD));
  try {
    checkPlan(raw);
  } catch (e) {
    // Plan messages name the field from the spec's root ("workflow/steps/0/...").
    if (e instanceof SpecError) throw new SpecError(`${INLINE_SPEC_FIELD}/${e.message}`);
    throw e;
  }
  return { spec: raw, json };
}
