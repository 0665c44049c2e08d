import type { ErrorObject } from "ajv";
import type { NextFunction, Request, Response } from "express";
import type { Logger } from "pino";
import { ApiError } from "../errors.js";
import { schemaErrorMessages } from "../schema-errors.js";
import { StorageError } from "../store/storage.js";

/**
 * The one place where failures become ApiError replies: request validation errors
 * (from openapi-backend's ajv), body-parser errors, domain errors and the unexpected.
 */

/** openapi-backend reports paths like /requestBody/policy/x, /path/run_id or /query/state. */
const REQUEST_FIELDS = {
  at: (instancePath: string) => instancePath.replace(/^\/requestBody/, "/body").replace(/^\//, "") || "body",
  max: 3,
};

export function validationError(errors: ErrorObject[] | null | undefined): ApiError {
  const list = errors ?? [];
  const summary = (es: ErrorObject[]) => schemaErrorMessages(es, REQUEST_FIELDS).join("; ") || "invalid request";
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
