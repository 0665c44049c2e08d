import { constants as fsc, promises as fsp } from "node:fs";
import { Ajv, type ErrorObject } from "ajv";
import { parseDocument } from "yaml";
import { runSpecSchema } from "./schema.js";
import type { RunSpec } from "./types.js";
import { checkPlan } from "./plan.js";
import { SpecError } from "./errors.js";

export { SpecError };

/** Spec files are small documents; anything bigger is refused before parsing. */
export const MAX_SPEC_BYTES = 1024 * 1024;


const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
const validateSpec = ajv.compile<RunSpec>(runSpecSchema);

export function describeAjvErrors(errors: ErrorObject[] | null | undefined, root: string): string {
  if (!errors?.length) return `${root}: invalid`;
  // if/then and oneOf produce a summary error next to the specific ones: keep the specific.
  const specific = errors.filter((e) => e.keyword !== "if" && e.keyword !== "oneOf");
  const list = (specific.length ? specific : errors).slice(0, 5).map((e) => {
    const at = root + e.instancePath;
    if (e.keyword === "required") return `${at}/${(e.params as { missingProperty: string }).missingProperty}: is required`;
    if (e.keyword === "additionalProperties")
      return `${at}/${(e.params as { additionalProperty: string }).additionalProperty}: unknown property`;
    if (e.keyword === "enum") return `${at}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(", ")}`;
    if (e.keyword === "const") return `${at}: must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    return `${at}: ${e.message}`;
  });
  return list.join("; ");
}

/**
 * Reads a spec file safely: only regular files (a symlink to a device or a FIFO is
 * refused without blocking, thanks to O_NONBLOCK), bounded size, text only.
 */
async function readSpecFile(file: string): Promise<string> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch (e) {
    throw new SpecError(`cannot open spec file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new SpecError(`spec file ${file} is not a regular file`);
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

export function parseSpecText(text: string, yamlFormat: boolean, file: string): unknown {
  if (!yamlFormat) {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new SpecError(`spec file ${file} is not valid JSON: ${(e as Error).message}`);
    }
  }
  // maxAliasCount bounds alias expansion, so a "billion laughs" document fails fast.
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) throw new SpecError(`spec file ${file} is not valid YAML: ${doc.errors[0].message}`);
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new SpecError(`spec file ${file} is not usable YAML: ${(e as Error).message}`);
  }
}

/** Load, validate and plan-check a run spec. Throws SpecError naming the problem. */
export async function loadSpec(file: string): Promise<RunSpec> {
  const text = await readSpecFile(file);
  const raw = parseSpecText(text, /\.ya?ml$/i.test(file), file);
  if (!validateSpec(raw)) throw new SpecError(`invalid spec ${file}: ${describeAjvErrors(validateSpec.errors, "spec")}`);
  checkPlan(raw);
  return raw;
}
