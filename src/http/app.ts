import express, { type Request, type Response } from "express";
import { OpenAPIBackend, type Document } from "openapi-backend";
import addFormats from "ajv-formats";
import type { Logger } from "pino";
import { ApiError } from "../errors.js";
import type { HandlerMap, Reply } from "./handler.js";
import { errorMiddleware, validationError } from "./errors.js";
import { bearerAuth } from "./auth.js";

/** The Rust daemon's cap; over it → 413 PAYLOAD_TOO_LARGE with a JSON body. */
export const BODY_LIMIT_BYTES = 4 * 1024 * 1024;

export interface AppOptions {
  definition: Document;
  handlers: HandlerMap;
  log: Logger;
  /** Bearer token required on every route; null disables auth (Unix socket, --no-auth). */
  token: string | null;
}

/**
 * Bodies are parsed here rather than by express.json(): every request body is JSON
 * whatever its Content-Type (old clients omit it), invalid UTF-8 and malformed JSON
 * are INVALID_SPEC, and an empty body is "no body" (cancel allows that).
 */
function parseBody(buf: unknown): unknown {
  if (!Buffer.isBuffer(buf) || buf.length === 0) return undefined;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(buf);
  } catch {
    throw new ApiError("INVALID_SPEC", "request body is not valid UTF-8");
  }
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError("INVALID_SPEC", `malformed JSON body: ${(e as Error).message}`);
  }
}

/** Writes a reply in one go with an explicit Content-Length (never chunked). */
function send(res: Response, reply: Reply): void {
  const body = "json" in reply ? JSON.stringify(reply.json) : reply.raw;
  res.writeHead(reply.status ?? 200, {
    "content-type": "json" in reply ? "application/json; charset=utf-8" : reply.contentType,
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

/**
 * openapi-backend rebuilds its flat operation list (lodash chains) and a RegExp per
 * path template on every match, several times per request; that dominated a
 * request's CPU profile. The definition never changes after init, so the list is
 * built once and each template compiled once (same specificity order as the router).
 */
function memoiseRouting(api: OpenAPIBackend): void {
  const router = api.router;
  const operations = router.getOperations();
  router.getOperations = () => operations;
  const exact = new Map<string, (typeof operations)[number]>();
  const templated: Array<{ re: RegExp; op: (typeof operations)[number] }> = [];
  for (const op of operations) {
    if (!op.path.includes("{")) exact.set(`${op.method} ${op.path}`, op);
    else {
      const pattern = op.path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+");
      templated.push({ re: new RegExp(`^${pattern}$`), op });
    }
  }
  templated.sort((a, b) => b.op.path.replace(/\{.*?\}/g, "").length - a.op.path.replace(/\{.*?\}/g, "").length);
  const original = router.matchOperation.bind(router);
  router.matchOperation = ((req: { method: string; path: string }, strict?: boolean) => {
    const method = req.method.toLowerCase();
    const path = req.path.replace(/\/+$/, "") || "/";
    const hit = exact.get(`${method} ${path}`) ?? templated.find((t) => t.op.method === method && t.re.test(path))?.op;
    // Misses (404/405) keep the library's own logic and error messages.
    return hit ?? original(req as never, strict as never);
  }) as typeof router.matchOperation;
}

export async function createApp(opts: AppOptions): Promise<express.Express> {
  const api = new OpenAPIBackend({
    // Auth is enforced by bearerAuth() per listener, not by openapi-backend.
    definition: { ...opts.definition, security: [] },
    strict: false,
    validate: true,
    ajvOpts: { allErrors: true, strict: false },
    customizeAjv: (ajv) => {
      addFormats.default(ajv);
      return ajv;
    },
  });
  await api.init();
  memoiseRouting(api);

  // Declared query parameters per operation: unknown ones are dropped, never an error.
  const declaredQuery = new Map<string, Set<string>>();
  for (const op of api.getOperations())
    declaredQuery.set(op.operationId!, new Set((op.parameters ?? []).filter((p) => "in" in p && p.in === "query").map((p) => (p as { name: string }).name)));

  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.set("query parser", "simple");
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on("finish", () =>
      opts.log.info({ method: req.method, path: req.path, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 }, "request"),
    );
    next();
  });
  if (opts.token !== null) app.use(bearerAuth(opts.token));
  app.use(express.raw({ type: () => true, limit: BODY_LIMIT_BYTES }));
  /**
   * Routing and validation are openapi-backend's (its router and its ajv request
   * validator); dispatch is by operationId into `opts.handlers`. We call the pieces
   * rather than api.handleRequest(), which parses each request four times.
   */
  app.use((req: Request, res: Response) => {
    try {
      decodeURIComponent(req.path); // path parameters are decoded by the router: reject what cannot be
    } catch {
      throw new ApiError("INVALID_PARAMS", "path: not valid percent-encoding");
    }
    const request = { method: req.method, path: req.path, query: req.query as Record<string, string | string[]>, headers: req.headers as Record<string, string | string[]>, body: undefined as unknown };
    const op = api.router.matchOperation(request);
    if (!op?.operationId) throw new ApiError("NOT_FOUND", "route not found"); // before the body: an unknown route is 404 whatever it carries
    request.body = parseBody(req.body);
    const keep = declaredQuery.get(op.operationId)!;
    request.query = Object.fromEntries(Object.entries(request.query).filter(([k]) => keep.has(k)));
    const validation = api.validator.validateRequest(request, op);
    if (validation.errors?.length) throw validationError(validation.errors);
    const parsed = api.router.parseRequest(request, op);
    const handler = opts.handlers[op.operationId as keyof HandlerMap] as (input: unknown) => Reply;
    send(res, handler({ params: parsed.params, query: parsed.query, body: parsed.requestBody }));
  });
  app.use(errorMiddleware(opts.log));
  return app;
}
