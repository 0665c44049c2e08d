// The reply conformance gate: every reply the test clients receive is checked against
// openapi.yaml before a test looks at it. openapi-backend validates bodies and declared
// headers; it passes undeclared status codes and never looks at the media type, so those
// rules are checked here. A violation throws (the test fails naming the operation, the
// status and the rule); every checked reply is tallied for the suite-wide summary.
import { SetMatchType } from "openapi-backend";
import { tally, type Tally } from "./conformance-tally.js";
import { declaredResponse, declaredStatus, formatErrors, matchOperation, spec, validateSchema } from "./openapi.js";

export type Rule = "route" | "status" | "content-type" | "body" | "header" | "transport";

export interface Violation {
  /** operationId, or "(no operation)" for a path/method the spec does not have. */
  operation: string;
  status: number;
  rule: Rule;
  message: string;
}

/** A reply as a client received it. */
export interface Reply {
  method: string;
  /** Request path exactly as sent on the wire (a query string is ignored). */
  path: string;
  status: number;
  headers: Headers | Record<string, string | string[] | undefined>;
  body: Buffer | string;
}

const NO_OPERATION = "(no operation)";

// The path exactly as sent: the server routes it raw, while a URL parser would resolve `..` and `%2e%2e`.
const pathOf = (reply: Pick<Reply, "path">) => reply.path.split(/[?#]/)[0]!;
const operationOf = (reply: Pick<Reply, "method" | "path">) => matchOperation(reply.method, pathOf(reply))?.operationId ?? NO_OPERATION;

function headerRecord(h: Reply["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  if (h instanceof Headers) h.forEach((v, k) => (out[k.toLowerCase()] = v));
  else for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
  return out;
}

const mediaType = (contentType: string) => contentType.split(";")[0]!.trim().toLowerCase();
const isJsonType = (type: string) => type === "application/json" || type.endsWith("+json");

/**
 * The declared media-type key a reply's type falls under, most specific first: exact, `type/*`, `*\/*`.
 * A key may carry parameters (`text/plain; version=0.0.4`): it is matched by its type.
 */
function declaredMediaType(declared: string[], type: string): string | undefined {
  const lower = new Map(declared.map((k) => [mediaType(k), k]));
  return lower.get(type) ?? lower.get(`${type.split("/")[0]}/*`) ?? lower.get("*/*");
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** Everything about a reply that openapi.yaml (or the transport rules every reply follows) does not allow. */
export function replyViolations(reply: Reply): Violation[] {
  const headers = headerRecord(reply.headers);
  const bytes = Buffer.isBuffer(reply.body) ? reply.body : Buffer.from(reply.body, "utf8");
  const text = bytes.toString("utf8");
  const pathname = pathOf(reply);
  const op = matchOperation(reply.method, pathname);
  const operation = op?.operationId ?? NO_OPERATION;
  const violations: Violation[] = [];
  const add = (rule: Rule, message: string) => violations.push({ operation, status: reply.status, rule, message });

  // Transport: one reply, one explicit length (orchestrators read to Content-Length or EOF).
  if (/chunked/i.test(headers["transfer-encoding"] ?? "")) add("transport", "chunked transfer-encoding");
  if (headers["content-length"] === undefined) add("transport", "no Content-Length");
  else if (!headers["content-encoding"] && reply.method.toUpperCase() !== "HEAD" && Number(headers["content-length"]) !== bytes.length)
    add("transport", `Content-Length ${headers["content-length"]} but ${bytes.length} body bytes`);

  // No operation of the spec is HEAD, and a HEAD reply has no body to check.
  if (reply.method.toUpperCase() === "HEAD") {
    if (!op && reply.status !== 404 && reply.status !== 401) add("route", `HEAD ${pathname} is not an operation of the spec and answered ${reply.status}, not 404 (or 401)`);
    return violations;
  }

  if (!op) {
    // The spec's operations are all there is: anything else is an ApiError 404 NOT_FOUND, or
    // 401 UNAUTHORIZED first where the listener requires a token (as the spec's description says).
    const parsed = parseJson(text);
    const problems = parsed.ok ? validateSchema("ApiError", parsed.value) : [`not JSON (${parsed.error})`];
    for (const p of problems) add("body", `ApiError: ${p}`);
    const code = parsed.ok ? (parsed.value as { code?: unknown } | null)?.code : undefined;
    const allowed = reply.status === 404 ? code === undefined || code === "NOT_FOUND" : reply.status === 401 && code === "UNAUTHORIZED";
    if (!allowed) add("route", `${reply.method} ${pathname} is not an operation of the spec and answered ${reply.status}${typeof code === "string" ? ` ${code}` : ""}, not 404 NOT_FOUND (or 401 UNAUTHORIZED)`);
    return violations;
  }

  const statusKey = declaredStatus(op.operationId, reply.status);
  if (statusKey === undefined) {
    add("status", `status ${reply.status} is not declared (declared: ${Object.keys(op.responses ?? {}).join(", ")})`);
    return violations;
  }
  const declared = declaredResponse(op.operationId, reply.status)!;

  const headerResult = spec.validator.validateResponseHeaders(headers, op.operationId, {
    statusCode: reply.status,
    setMatchType: SetMatchType.Superset, // every declared header present and valid; undeclared ones allowed
  });
  for (const e of formatErrors(headerResult.errors)) add("header", e);

  const content = Object.keys(declared.content ?? {});
  const contentType = headers["content-type"];
  if (content.length === 0) {
    if (bytes.length > 0) add("body", `${statusKey} declares no content but the reply has ${bytes.length} body bytes`);
    return violations;
  }
  if (contentType === undefined) {
    add("content-type", `no Content-Type (declared for ${statusKey}: ${content.join(", ")})`);
    return violations;
  }
  const type = mediaType(contentType);
  const key = declaredMediaType(content, type);
  if (key === undefined) {
    add("content-type", `${type} is not declared for ${statusKey} (declared: ${content.join(", ")})`);
    return violations;
  }
  // Bodies of a JSON media type are validated against its schema; other types (artifact bytes) are opaque.
  if (isJsonType(mediaType(key))) {
    const parsed = parseJson(text);
    if (!parsed.ok) {
      add("body", `declared ${key} but the body is not JSON (${parsed.error})`);
      return violations;
    }
    const result = spec.validator.validateResponse(parsed.value, op.operationId, reply.status);
    for (const e of formatErrors(result.errors)) add("body", e);
  }
  return violations;
}

function describeViolations(reply: Pick<Reply, "method" | "path" | "status">, violations: Violation[]): string {
  const op = violations[0]?.operation ?? operationOf(reply);
  return (
    `reply does not conform to openapi.yaml: ${reply.method} ${reply.path} → ${reply.status} ${op === NO_OPERATION ? op : `(${op})`}\n` +
    violations.map((v) => `  - [${v.rule}] ${v.message}`).join("\n")
  );
}

export class ConformanceError extends Error {
  constructor(
    readonly reply: Pick<Reply, "method" | "path" | "status">,
    readonly violations: Violation[],
  ) {
    super(describeViolations(reply, violations));
    this.name = "ConformanceError";
  }
}

export type Gate = (reply: Reply) => void;

/** A gate counting into `into`: checks the reply, tallies it, throws a ConformanceError on any violation. */
export function createGate(into: Tally): Gate {
  return (reply) => {
    const violations = replyViolations(reply);
    into.checked += 1;
    const key = `${operationOf(reply)} ${reply.status}`;
    into.pairs[key] = (into.pairs[key] ?? 0) + 1;
    if (violations.length === 0) return;
    into.violations += 1;
    const err = new ConformanceError(reply, violations);
    into.examples.push(err.message);
    if (into.examples.length > 20) into.examples.shift(); // the latest few
    throw err;
  };
}

/** The gate every test client calls; its counts make the run's summary line. */
export const gateReply: Gate = createGate(tally);

/** A reply a test deliberately does not check (counted, so the summary shows how many). */
export function skipReply(): void {
  tally.unchecked += 1;
}
