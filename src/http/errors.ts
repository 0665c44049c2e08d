import type { ErrorObject } from "ajv";
import type { NextFunction, Request, Response } from "express";
import type { Logger } from "pino";
import { ApiError } from "../errors.js";
import { StorageError } from "../store/storage.js";

/**
 * The one place where failures become ApiError replies: request validation errors
 * (from openapi-backend's ajv), body-parser errors, domain errors and the unexpected.
 */

/** Field names come from the client: keep messages bounded. */
const clip = (s: string) => (s.length > 80 ? `${s.slice(0, 77)}...` : s);

function where(e: ErrorObject): string {
  // openapi-backend reports paths like /requestBody/policy/x, /path/run_id or /query/state
  const path = e.instancePath.replace(/^\/requestBody/, "/body").replace(/^\//, "");
  const missing = e.keyword === "required" ? (e.params as { missingProperty: string }).missingProperty : undefined;
  const extra = e.keyword === "additionalProperties" ? (e.params as { additionalProperty: string }).additionalProperty : undefined;
  return clip([path || "body", missing ?? extra].filter(Boolean).join("/"));
}

/** The branches of a oneOf/anyOf error (ajv's verbose mode puts them in `schema`). */
const branchesOf = (e: ErrorObject): Array<{ required?: string[]; type?: string }> => (Array.isArray(e.schema) ? e.schema : []);

/** `oneOf: [{required: [a]}, {required: [b]}]`: the fields of which exactly one is required. */
function exclusiveFields(e: ErrorObject): string[] | undefined {
  const bs = branchesOf(e);
  if (e.keyword !== "oneOf" || !bs.length || !bs.every((b) => b.required?.length === 1)) return undefined;
  return bs.map((b) => b.required![0]);
}

const isChoice = (e: ErrorObject) => e.keyword === "oneOf" || e.keyword === "anyOf";
/** `e` is a branch's complaint about the very value a oneOf/anyOf error `g` is about. */
const inside = (e: ErrorObject, g: ErrorObject) => e !== g && e.instancePath === g.instancePath && e.schemaPath.startsWith(`${g.schemaPath}/`);
/** What every branch of a oneOf/anyOf says anyway: a missing field, a wrong type. */
const generic = (e: ErrorObject) => e.keyword === "required" || e.keyword === "type";

/**
 * A oneOf/anyOf failure is worded once, by its own error ("exactly one of a or b is
 * required", "must be object or string"), not as its branches' complaints; unless a
 * branch says something specific (a string too short), which is then the message. The
 * "exactly one" error is dropped when exactly one of the fields is there: that field's
 * own error is the problem. Identical messages (a schema used twice) are listed once.
 */
function summarised(list: ErrorObject[]): ErrorObject[] {
  const choices = list.filter(isChoice);
  const kept = list.filter((e) => {
    if (generic(e) && choices.some((g) => inside(e, g))) return false;
    if (!isChoice(e)) return true;
    if (list.some((x) => inside(x, e) && !generic(x))) return false;
    const fields = exclusiveFields(e);
    const data = (e.data ?? {}) as Record<string, unknown>;
    return !fields || fields.filter((f) => data[f] !== undefined).length !== 1;
  });
  const seen = new Set<string>();
  return kept.filter((e) => {
    const key = `${e.instancePath} ${e.keyword} ${e.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

function describe(e: ErrorObject): string {
  const fields = exclusiveFields(e);
  if (fields) return `${where(e)}: exactly one of ${fields.join(" or ")} is required`;
  const types = branchesOf(e).map((b) => b.type);
  if ((e.keyword === "anyOf" || e.keyword === "oneOf") && types.length && types.every(Boolean)) return `${where(e)}: must be ${types.join(" or ")}`;
  if (e.keyword === "required") return `${where(e)}: is required`;
  if (e.keyword === "additionalProperties") return `${where(e)}: unknown property`;
  return `${where(e)}: ${e.message ?? "is invalid"}`;
}

export function validationError(errors: ErrorObject[] | null | undefined): ApiError {
  const list = summarised(errors ?? []);
  const summary = (es: ErrorObject[]) => (es.length ? es.slice(0, 3).map(describe).join("; ") : "invalid request");
  const inBody = list.filter((e) => e.instancePath.startsWith("/requestBody") || e.instancePath === "");
  if (list.length && !inBody.length) return new ApiError("INVALID_PARAMS", summary(list));
  // Anything under `policy` is INVALID_POLICY, unless the rest of the body is wrong too.
  const policyOnly = inBody.length > 0 && inBody.every((e) => e.instancePath.startsWith("/requestBody/policy"));
  return new ApiError(policyOnly ? "INVALID_POLICY" : "INVALID_SPEC", summary(inBody));
}

export function sendError(res: Response, err: ApiError): void {
  if (res.headersSent) return;
  res.status(err.status).json(err.toBody());
}

/** express error middleware: body-parser failures and anything thrown by a handler. */
export function errorMiddleware(log: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    if (err instanceof ApiError) return sendError(res, err);
    // Nothing was acknowledged (a failed write is rolled back): the client may retry once space returns.
    if (err instanceof StorageError) return sendError(res, new ApiError("INSUFFICIENT_STORAGE", err.message));
    if ((err as { type?: string }).type === "request.aborted") return; // the client is gone
    // body-parser failures (too large, bad encoding, broken gzip/deflate, …) carry a 4xx status.
    const status = (err as { status?: number }).status;
    if (status === 413) {
      const limit = (err as { limit?: number }).limit;
      return sendError(res, new ApiError("PAYLOAD_TOO_LARGE", limit ? `request body exceeds ${limit} bytes` : "request body too large"));
    }
    if (typeof status === "number" && status >= 400 && status < 500)
      return sendError(res, new ApiError("INVALID_SPEC", `unreadable request body: ${(err as Error).message}`));
    log.error({ err, method: req.method, path: req.path }, "unhandled error");
    sendError(res, new ApiError("INTERNAL_ERROR", "internal error"));
  };
}
