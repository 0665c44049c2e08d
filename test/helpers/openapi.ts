// openapi.yaml (the source of truth for shapes) as the tests see it: openapi-backend loads and
// dereferences it, matches request paths to operations and validates reply bodies with its
// ajv (which understands OpenAPI's `nullable`). This module only adds what the library does
// not do: which statuses an operation declares, and validation against a named component.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ErrorObject } from "ajv";
import addFormats from "ajv-formats";
import { OpenAPIBackend, ValidationContext, type Document, type Operation } from "openapi-backend";
import type { OpenAPIV3 } from "openapi-types";
import { parse as parseYaml } from "yaml";

const OPENAPI_PATH = fileURLToPath(new URL("../../openapi.yaml", import.meta.url));

/** A dereferenced operation of the spec (path-level parameters merged in, as openapi-backend lists them). */
export type OperationInfo = Operation<OpenAPIV3.Document> & { operationId: string };
export type ResponseObject = OpenAPIV3.ResponseObject;
export type SchemaObject = OpenAPIV3.SchemaObject;

/** openapi-backend over openapi.yaml, initialised once per test process. */
export const spec: OpenAPIBackend<OpenAPIV3.Document> = new OpenAPIBackend<OpenAPIV3.Document>({
  // The spec expands YAML anchors in its examples.
  definition: parseYaml(readFileSync(OPENAPI_PATH, "utf8"), { maxAliasCount: -1 }) as Document as OpenAPIV3.Document,
  strict: true,
  validate: true,
  ajvOpts: { allErrors: true, strict: false },
  customizeAjv: (ajv) => {
    addFormats.default(ajv);
    return ajv;
  },
});
await spec.init();

/** The dereferenced document. */
export const definition = spec.definition;

/** Every operation of the spec, by operationId. */
export const operations: Map<string, OperationInfo> = new Map(
  spec.getOperations().map((op) => [op.operationId!, op as OperationInfo]),
);

/** The operation a request (method + path without query) is routed to, or undefined. */
export function matchOperation(method: string, pathname: string): OperationInfo | undefined {
  return spec.router.matchOperation({ method, path: pathname, headers: {} }) as OperationInfo | undefined;
}

function operation(operationId: string): OperationInfo {
  const op = operations.get(operationId);
  if (!op) throw new Error(`unknown operationId ${operationId}`);
  return op;
}

/** The response key an HTTP status falls under ("200", "4XX" or "default"), or undefined when undeclared. */
export function declaredStatus(operationId: string, status: number): string | undefined {
  const responses = operation(operationId).responses ?? {};
  return [String(status), `${Math.floor(status / 100)}XX`, "default"].find((k) => k in responses);
}

/** The declared response object for a status (dereferenced), or undefined. */
export function declaredResponse(operationId: string, status: number): ResponseObject | undefined {
  const key = declaredStatus(operationId, status);
  return key === undefined ? undefined : (operation(operationId).responses[key] as ResponseObject);
}

export function formatErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map(
    (e) => `${e.instancePath || "(root)"} ${e.message ?? e.keyword}${e.params ? " " + JSON.stringify(e.params) : ""}`,
  );
}

/**
 * Problems of a JSON reply of `operationId` with HTTP `status` (empty = conforms): the status
 * must be declared (openapi-backend falls back to `default` and passes anything else), and
 * the body must match the declared application/json schema.
 */
export function validateResponse(operationId: string, status: number, body: unknown): string[] {
  if (declaredStatus(operationId, status) === undefined) {
    const keys = Object.keys(operation(operationId).responses ?? {}).join(", ");
    return [`status ${status} is not declared for ${operationId} (declared: ${keys})`];
  }
  const result = spec.validator.validateResponse(body, operationId, status);
  return formatErrors(result.errors).map((e) => `${operationId} ${status}: ${e}`);
}

/** A component schema of the spec, dereferenced (a copy: generators may annotate it). */
export function jsonSchemaFor(name: string): SchemaObject {
  const schema = definition.components?.schemas?.[name];
  if (!schema) throw new Error(`unknown component schema ${name}`);
  return structuredClone(schema) as SchemaObject;
}

const componentValidators = new Map<string, ReturnType<ReturnType<typeof spec.validator.getAjv>["compile"]>>();

/** Validate any value against a named component schema (e.g. "ApiError"); `[]` when it conforms. */
export function validateSchema(name: string, value: unknown): string[] {
  let validate = componentValidators.get(name);
  if (!validate) {
    // The same ajv set-up openapi-backend validates replies with.
    validate = spec.validator.getAjv(ValidationContext.Response).compile(jsonSchemaFor(name) as object);
    componentValidators.set(name, validate);
  }
  return validate(value) ? [] : formatErrors(validate.errors);
}
