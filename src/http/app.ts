import express, { type Request, type Response } from "express";
import { OpenAPIBackend, type Context, type Document } from "openapi-backend";
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

function send(res: Response, reply: Reply): void {
  res.status(reply.status ?? 200);
  if ("json" in reply) res.json(reply.json);
  else res.type(reply.contentType).send(reply.raw);
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
    handlers: {
      ...Object.fromEntries(
        Object.entries(opts.handlers).map(([op, handler]) => [
          op,
          (c: Context) => handler({ params: c.request.params, query: c.request.query, body: c.request.requestBody } as never),
        ]),
      ),
      validationFail: (c: Context) => {
        throw validationError(c.validation.errors);
      },
      notFound: () => {
        throw new ApiError("NOT_FOUND", "route not found");
      },
      methodNotAllowed: () => {
        throw new ApiError("NOT_FOUND", "route not found");
      },
    },
  });
  await api.init();

  // Declared query parameters per operation: unknown ones are dropped, never an error.
  const declaredQuery = new Map<string, Set<string>>();
  for (const op of api.getOperations())
    declaredQuery.set(op.operationId!, new Set((op.parameters ?? []).filter((p) => "in" in p && p.in === "query").map((p) => (p as { name: string }).name)));

  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on("finish", () =>
      opts.log.info({ method: req.method, path: req.path, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 }, "request"),
    );
    next();
  });
  if (opts.token !== null) app.use(bearerAuth(opts.token));
  app.use(express.raw({ type: () => true, limit: BODY_LIMIT_BYTES }));
  app.use(async (req: Request, res: Response, next: express.NextFunction) => {
    try {
    const request = { method: req.method, path: req.path, query: req.query as Record<string, string | string[]>, headers: req.headers as Record<string, string | string[]>, body: parseBody(req.body) };
    const op = api.matchOperation(request);
    if (op) {
      const keep = declaredQuery.get(op.operationId!)!;
      request.query = Object.fromEntries(Object.entries(request.query).filter(([k]) => keep.has(k)));
    }
    send(res, (await api.handleRequest(request)) as Reply);
    } catch (e) {
      next(e);
    }
  });
  app.use(errorMiddleware(opts.log));
  return app;
}
