// Loads openapi.yaml (the source of truth for shapes) and validates replies against it.
//
// OpenAPI 3.0 is not JSON Schema: `nullable: true` must become "also allow null", and
// `$ref`s point into the document. We convert every schema once (nullable → null allowed,
// `#/components/schemas/X` → a ref into one ajv schema holding all components) and compile
// response schemas lazily per (operationId, status).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import { parse as parseYaml } from "yaml";

// ajv-formats ships CJS with `export default`; under NodeNext the callable may sit on .default.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

export const OPENAPI_PATH = fileURLToPath(new URL("../../openapi.yaml", import.meta.url));

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"] as const;

export interface OperationInfo {
  operationId: string;
  method: string; // lower case
  path: string; // template, e.g. /v1/runs/{run_id}
  operation: JsonObject;
  pathItem: JsonObject;
  /** Matches a concrete request path (already URL-decoded per segment is NOT required). */
  matcher: RegExp;
}

export const openapiDoc: JsonObject = parseYaml(readFileSync(OPENAPI_PATH, "utf8"), {
  // The spec uses YAML anchors for examples; allow them to expand.
  maxAliasCount: -1,
}) as JsonObject;

/** Resolve a local JSON pointer ref like "#/components/schemas/RunState". */
export function resolveRef(ref: string, doc: JsonObject = openapiDoc): Json {
  if (!ref.startsWith("#/")) throw new Error(`only local refs are supported: ${ref}`);
  let node: Json = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || Array.isArray(node) || !(key in node)) {
      throw new Error(`unresolvable $ref ${ref} (at "${key}")`);
    }
    node = (node as JsonObject)[key];
  }
  return node;
}

/** Follow a chain of `$ref`s until a non-ref node. */
export function follow(node: Json, doc: JsonObject = openapiDoc): Json {
  let cur = node;
  for (let i = 0; i < 32; i++) {
    if (cur && typeof cur === "object" && !Array.isArray(cur) && typeof cur.$ref === "string") {
      cur = resolveRef(cur.$ref, doc);
    } else {
      return cur;
    }
  }
  throw new Error("$ref chain too deep");
}

/**
 * Fully dereference a node (recursively inlines every `$ref`). The spec has no recursive
 * schemas; a cycle guard throws instead of looping. Useful for json-schema-faker.
 */
export function deref(node: Json, doc: JsonObject = openapiDoc, seen: string[] = []): Json {
  if (Array.isArray(node)) return node.map((n) => deref(n, doc, seen));
  if (node === null || typeof node !== "object") return node;
  if (typeof node.$ref === "string") {
    const ref = node.$ref;
    if (seen.includes(ref)) throw new Error(`recursive $ref ${ref}`);
    return deref(resolveRef(ref, doc), doc, [...seen, ref]);
  }
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node)) out[k] = deref(v, doc, seen);
  return out;
}

const COMPONENTS_ID = "openapi-components";

/**
 * Convert an OpenAPI 3.0 schema to JSON Schema (draft-07 flavour ajv understands):
 * - `nullable: true` → null is allowed (type gains "null", enum gains null, or anyOf with null);
 * - `$ref: #/components/schemas/X` → `openapi-components#/definitions/X`;
 * - OpenAPI-only annotations (example, xml, discriminator, …) are dropped.
 * With `inline` the refs are dereferenced instead (for generators).
 */
export function toJsonSchema(node: Json): Json {
  if (Array.isArray(node)) return node.map(toJsonSchema);
  if (node === null || typeof node !== "object") return node;
  if (typeof node.$ref === "string") {
    const m = /^#\/components\/schemas\/(.+)$/.exec(node.$ref);
    if (!m) throw new Error(`unsupported schema $ref ${node.$ref}`);
    return { $ref: `${COMPONENTS_ID}#/definitions/${m[1]}` };
  }
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "example" || k === "examples" || k === "xml" || k === "externalDocs" || k === "discriminator") continue;
    if (k === "nullable" || k === "readOnly" || k === "writeOnly" || k === "deprecated") continue;
    if (k === "properties" || k === "patternProperties" || k === "definitions") {
      const props: JsonObject = {};
      for (const [pk, pv] of Object.entries(v as JsonObject)) props[pk] = toJsonSchema(pv);
      out[k] = props;
      continue;
    }
    // `default`/`enum`/`const` hold data, not schemas: copy as is.
    out[k] = k === "default" || k === "enum" || k === "const" || k === "required" ? v : toJsonSchema(v);
  }
  if (node.nullable === true) {
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (typeof out.type === "string") {
      out.type = [out.type, "null"];
    } else if (Array.isArray(out.type)) {
      if (!out.type.includes("null")) out.type = [...out.type, "null"];
    } else if (!("enum" in out)) {
      return { anyOf: [out, { type: "null" }] };
    }
  }
  return out;
}

function buildAjv(): Ajv {
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  const schemas = ((openapiDoc.components as JsonObject)?.schemas ?? {}) as JsonObject;
  const definitions: JsonObject = {};
  for (const [name, s] of Object.entries(schemas)) definitions[name] = toJsonSchema(s);
  ajv.addSchema({ $id: COMPONENTS_ID, definitions }, COMPONENTS_ID);
  return ajv;
}

export const ajv = buildAjv();

function templateToRegExp(template: string): RegExp {
  const parts = template.split(/(\{[^}]+\})/).map((p) =>
    p.startsWith("{") ? "([^/]+)" : p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
  );
  return new RegExp(`^${parts.join("")}$`);
}

export const operations: Map<string, OperationInfo> = (() => {
  const map = new Map<string, OperationInfo>();
  for (const [path, item] of Object.entries((openapiDoc.paths ?? {}) as JsonObject)) {
    const pathItem = item as JsonObject;
    for (const method of HTTP_METHODS) {
      const op = pathItem[method] as JsonObject | undefined;
      if (!op) continue;
      const operationId = String(op.operationId);
      map.set(operationId, { operationId, method, path, operation: op, pathItem, matcher: templateToRegExp(path) });
    }
  }
  return map;
})();

/** Find the operation for a concrete request (pathname without query), or undefined. */
export function matchOperation(method: string, pathname: string): OperationInfo | undefined {
  const m = method.toLowerCase();
  for (const info of operations.values()) {
    if (info.method === m && info.matcher.test(pathname)) return info;
  }
  return undefined;
}

export interface DeclaredResponse {
  status: string; // the key that matched: "200", "4XX" or "default"
  /** JSON schema (OpenAPI form) of the application/json body, if that media type is declared. */
  jsonSchema?: Json;
  /** All declared media types. */
  mediaTypes: string[];
}

export function declaredResponse(operationId: string, status: number): DeclaredResponse | undefined {
  const info = operations.get(operationId);
  if (!info) throw new Error(`unknown operationId ${operationId}`);
  const responses = (info.operation.responses ?? {}) as JsonObject;
  const key = [String(status), `${String(status)[0]}XX`, "default"].find((k) => k in responses);
  if (!key) return undefined;
  const resp = follow(responses[key]) as JsonObject;
  const content = (resp.content ?? {}) as JsonObject;
  const json = content["application/json"] as JsonObject | undefined;
  return { status: key, jsonSchema: json?.schema, mediaTypes: Object.keys(content) };
}

const compiled = new Map<string, ValidateFunction>();

function compile(cacheKey: string, schema: Json): ValidateFunction {
  let v = compiled.get(cacheKey);
  if (!v) {
    v = ajv.compile(toJsonSchema(schema) as object);
    compiled.set(cacheKey, v);
  }
  return v;
}

function formatErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map(
    (e) => `${e.instancePath || "(root)"} ${e.message ?? e.keyword}${e.params ? " " + JSON.stringify(e.params) : ""}`,
  );
}

/** Validate any value against a named component schema (e.g. "ApiError"). */
export function validateSchema(name: string, value: unknown): string[] {
  const v = compile(`schema:${name}`, { $ref: `#/components/schemas/${name}` });
  return v(value) ? [] : formatErrors(v.errors);
}

/**
 * Validate a reply of `operationId` with HTTP `status` and parsed JSON `body`.
 * Returns a list of problems (empty = conforms). An undeclared status is a problem.
 * For non-JSON media types (e.g. artifact bytes) only the status is checked.
 */
export function validateResponse(operationId: string, status: number, body: unknown): string[] {
  const declared = declaredResponse(operationId, status);
  if (!declared) {
    const info = operations.get(operationId)!;
    const keys = Object.keys((info.operation.responses ?? {}) as JsonObject).join(", ");
    return [`status ${status} is not declared for ${operationId} (declared: ${keys})`];
  }
  if (declared.jsonSchema === undefined) return [];
  if (body === undefined) return [`${operationId} ${status}: expected a JSON body, got none or non-JSON`];
  const v = compile(`op:${operationId}:${declared.status}`, declared.jsonSchema);
  return v(body) ? [] : formatErrors(v.errors).map((e) => `${operationId} ${status}: ${e}`);
}

/** A fully dereferenced JSON Schema for a component (nullable converted), for generators. */
export function jsonSchemaFor(name: string): Json {
  return toJsonSchema(deref({ $ref: `#/components/schemas/${name}` })) as Json;
}
