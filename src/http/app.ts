import express, { type Request, type Response } from "express";
import { OpenAPIBackend, type Document } from "openapi-backend";
import addFormats from "ajv-formats";
import type { Logger } from "pino";
import { ApiError } from "../errors.js";
import type { AnyReply, HandlerMap } from "./handler.js";
import { errorMiddleware, validationError } from "./errors.js";
import { bearerAuth } from "./auth.js";

/** The Rust daemon's cap; over it → 413 PAYLOAD_TOO_LARGE with a JSON body. */
const BODY_LIMIT_BYTES = 4 * 1024 * 1024;

export interface AppOptions {
  api: OpenAPIBackend;
  handlers: HandlerMap;
  log: Logger;
  /** Bearer token required on every route; null disables auth (Unix socket, --no-auth). */
  token: string | null;
  /** Told of every answered request, by its OpenAPI path template ("unmatched" for none). */
  onRequest?: (route: string, method: string, status: number) => void;
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

/** Writes a reply in one go with an explicit Content-Length (never chunked); a stream writes itself. */
function send(req: Request, res: Response, reply: AnyReply): void {
  if ("stream" in reply) return reply.stream(req, res);
  const body = "json" in reply ? JSON.stringify(reply.json) : reply.raw;
  res.writeHead(reply.status ?? 200, {
    "content-type": "json" in reply ? "application/json; charset=utf-8" : reply.contentType,
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

type Operation = ReturnType<OpenAPIBackend["getOperations"]>[number];

interface Route {
  op: Operation & { operationId: string };
  /** Declared query parameters: unknown ones are dropped, never an error. */
  query: Set<string>;
  /** Declared header parameters (lower-case): part of what a verdict depends on. */
  headers: string[];
}

/**
 * The routing table, built once from openapi-backend's operations. Its own matcher
 * rebuilds the operation list and a RegExp per path template on every call (that
 * dominated a request's CPU profile); the definition never changes after init.
 * Most specific template first, as openapi-backend orders them.
 */
function routeTable(api: OpenAPIBackend): (method: string, path: string) => Route | undefined {
  const literal = (p: string) => p.replace(/\{[^}]+\}/g, "").length;
  const routes = api
    .getOperations()
    .sort((a, b) => literal(b.path) - literal(a.path))
    .map((op) => ({
      method: op.method,
      re: new RegExp(`^${op.path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+")}$`),
      route: {
        op: op as Route["op"],
        query: new Set((op.parameters ?? []).filter((p) => "in" in p && p.in === "query").map((p) => (p as { name: string }).name)),
        headers: (op.parameters ?? []).filter((p) => "in" in p && p.in === "header").map((p) => (p as { name: string }).name.toLowerCase()),
      },
    }));
  return (method, path) => {
    const m = method.toLowerCase();
    const p = path.replace(/\/+$/, "") || "/";
    return routes.find((r) => r.method === m && r.re.test(p))?.route;
  };
}

/** openapi-backend, initialised once per daemon: its router, and its ajv validators from openapi.yaml. */
export async function createApi(definition: Document): Promise<OpenAPIBackend> {
  const api = new OpenAPIBackend({
    // Auth is enforced by bearerAuth() per listener, not by openapi-backend.
    definition: { ...definition, security: [] },
    strict: false,
    // quick: no meta-validation of the definition (`make lint` does that) and request
    // validators compiled on first use instead of all at start: that took ~1 s of CPU
    // before the daemon could answer anything. precompileValidators() warms them up.
    quick: true,
    validate: true,
    // The validator's parse of path and query parameters (typed by the schema) is what
    // handlers get: the request is parsed once, not again by the router.
    coerceTypes: true,
    // verbose: errors carry their schema and data, so oneOf/anyOf failures can be worded (see errors.ts).
    ajvOpts: { allErrors: true, strict: false, verbose: true },
    customizeAjv: (ajv) => {
      addFormats.default(ajv);
      return ajv;
    },
  });
  await api.init();
  return api;
}

/**
 * Compiles the request validators one operation per event-loop turn, starting `delayMs`
 * after start (the first requests, e.g. health checks, go first), so that requests
 * arriving meanwhile are served between them; the first request of an operation not
 * compiled yet compiles its own. Returns a function that stops it.
 */
export function precompileValidators(api: OpenAPIBackend, delayMs = 300): () => void {
  const ids = api.getOperations().map((op) => op.operationId).filter((id): id is string => !!id);
  let immediate: NodeJS.Immediate | undefined;
  const next = () => {
    const id = ids.shift();
    if (!id) return;
    api.validator.getRequestValidatorsForOperation(id);
    immediate = setImmediate(next);
  };
  const timer = setTimeout(next, delayMs);
  timer.unref();
  return () => {
    clearTimeout(timer);
    clearImmediate(immediate);
  };
}

/** Verdicts kept: one per distinct URL (and declared headers) of requests without a body. */
const VERDICTS_KEPT = 1024;

export function createApp(opts: AppOptions): express.Express {
  const { api } = opts;
  const match = routeTable(api);
  /**
   * openapi-backend's parsed, validated parameters of body-less requests, by operation,
   * URL and declared headers: a poller asking for the same events again is not parsed
   * and validated again (that was a sixth of such a request's CPU). Only valid verdicts
   * are kept (frozen: every request with that key shares them); oldest out first.
   */
  const verdicts = new Map<string, { params: unknown; query: unknown }>();

  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.set("query parser", "simple");
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on("finish", () => {
      opts.log.info({ method: req.method, path: req.path, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 }, "request");
      // The template, never the raw path: a metric label per run id would grow without bound.
      if (opts.onRequest) {
        const route = (res.locals.route as Route | undefined) ?? match(req.method, req.path);
        opts.onRequest(route?.op.path ?? "unmatched", route ? req.method.toUpperCase() : "other", res.statusCode);
      }
    });
    next();
  });
  if (opts.token !== null) app.use(bearerAuth(opts.token));
  const readBody = express.raw({ type: () => true, limit: BODY_LIMIT_BYTES });
  /**
   * Routed before the body is read: an unknown route is 404 whatever it carries, and only
   * operations that take a body read one (up to the cap, else 413); the others never look
   * at what they were sent, so they answer nothing their spec entry does not declare.
   */
  app.use((req: Request, res: Response, next) => {
    const route = match(req.method, req.path);
    if (!route) return next(new ApiError("NOT_FOUND", "route not found"));
    res.locals.route = route;
    if (route.op.requestBody) return readBody(req, res, next);
    next();
  });
  /**
   * Routing and validation are openapi-backend's (its router and its ajv request
   * validator); dispatch is by operationId into `opts.handlers`. We call the pieces
   * rather than api.handleRequest(), which parses each request four times.
   */
  app.use((req: Request, res: Response, next: (err?: unknown) => void) => {
    const request = { method: req.method, path: req.path, query: req.query as Record<string, string | string[]>, headers: req.headers as Record<string, string | string[]>, body: undefined as unknown };
    const route = res.locals.route as Route;
    try {
      decodeURIComponent(req.path); // path parameters are decoded by the router: reject what cannot be
    } catch {
      throw new ApiError("INVALID_PARAMS", "path: not valid percent-encoding");
    }
    const { op } = route;
    request.body = parseBody(req.body);
    const key = op.requestBody ? null : `${op.operationId} ${req.url}${route.headers.map((h) => ` ${JSON.stringify(req.headers[h] ?? null)}`).join("")}`;
    let verdict = key === null ? undefined : verdicts.get(key);
    if (!verdict) {
      request.query = Object.fromEntries(Object.entries(request.query).filter(([k]) => route.query.has(k)));
      const validation = api.validator.validateRequest(request, op);
      if (validation.errors?.length) throw validationError(validation.errors);
      const coerced = validation.coerced as { params?: unknown; query?: unknown } | undefined;
      const parsed = coerced?.params ? coerced : api.router.parseRequest(request, op);
      verdict = { params: Object.freeze(parsed.params), query: Object.freeze(parsed.query) };
      if (key !== null) {
        if (verdicts.size >= VERDICTS_KEPT) verdicts.delete(verdicts.keys().next().value!);
        verdicts.set(key, verdict);
      }
    }
    const { params, query } = verdict;
    const handler = opts.handlers[op.operationId as keyof HandlerMap] as (input: unknown) => AnyReply | Promise<AnyReply>;
    const reply = handler({ params, query, body: request.body, headers: req.headers });
    if (reply instanceof Promise) reply.then((r) => send(req, res, r), next);
    else send(req, res, reply);
  });
  app.use(errorMiddleware(opts.log));
  return app;
}
