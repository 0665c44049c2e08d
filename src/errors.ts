import type { components } from "../generated/api.js";

export type ApiErrorBody = components["schemas"]["ApiError"];
export type ErrorCode = ApiErrorBody["code"];

/** The one table of error codes → HTTP status and retryability (the ApiError codes of openapi.yaml). */
const ERROR_TABLE: Record<ErrorCode, { status: number; retryable: boolean }> = {
  INVALID_SPEC: { status: 400, retryable: false },
  INVALID_POLICY: { status: 400, retryable: false },
  INVALID_PARAMS: { status: 400, retryable: false },
  NOT_FOUND: { status: 404, retryable: false },
  ALREADY_TERMINAL: { status: 409, retryable: false },
  UNAUTHORIZED: { status: 401, retryable: false },
  PAYLOAD_TOO_LARGE: { status: 413, retryable: false },
  STRUCTURED_OUTPUT_MISSING: { status: 404, retryable: false },
  STRUCTURED_OUTPUT_MALFORMED: { status: 422, retryable: false },
  ARTIFACT_NOT_FOUND: { status: 404, retryable: false },
  RESOURCE_LIMIT_EXCEEDED: { status: 503, retryable: true },
  INSUFFICIENT_STORAGE: { status: 507, retryable: true },
  INTERNAL_ERROR: { status: 500, retryable: true },
};

/** A domain error that maps to an ApiError reply. Services throw it; http/ renders it. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = ERROR_TABLE[code].status;
    this.retryable = ERROR_TABLE[code].retryable;
  }

  toBody(): ApiErrorBody {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

export const notFound = (what: string) => new ApiError("NOT_FOUND", `${what} not found`);
