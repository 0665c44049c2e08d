import type http from "node:http";
import { ApiError } from "../errors.js";
import { tokenMatches } from "./auth.js";

/** A listener's request handler; an express app is one. */
export type RequestHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface StartingOptions {
  /** The same health document GET /v1/health serves once the API is up. */
  health: () => unknown;
  /** Bearer token this listener requires (null: none, as for the Unix socket). */
  token: string | null;
  /** Resolves with the listener's full handler once the API is loaded. */
  ready: Promise<RequestHandler>;
  onRequest?: (route: string, method: string, status: number) => void;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The handler of a listener bound while the daemon is still starting. Loading express
 * and openapi-backend and setting up the router take most of a second of CPU on a small
 * host, and a supervisor's health check should not wait for them: GET /v1/health is
 * answered at once (token-checked like every route) with the health the API would serve,
 * and every other request is held, unread, until the API is ready and then served by it.
 * Once ready, requests go straight to the API.
 */
export function startingHandler(opts: StartingOptions): RequestHandler {
  let api: RequestHandler | null = null;
  opts.ready.then(
    (h) => (api = h),
    () => {}, // the daemon is failing to start; held requests get the error below
  );
  return (req, res) => {
    if (api) return api(req, res);
    const path = (req.url ?? "/").split("?")[0].replace(/\/+$/, "");
    if (req.method === "GET" && path === "/v1/health") {
      const status = opts.token === null || tokenMatches(req.headers.authorization, opts.token) ? 200 : 401;
      sendJson(res, status, status === 200 ? opts.health() : new ApiError("UNAUTHORIZED", "missing or invalid bearer token").toBody());
      opts.onRequest?.("/v1/health", "GET", status);
      return;
    }
    opts.ready.then(
      (h) => h(req, res),
      () => sendJson(res, 500, new ApiError("INTERNAL_ERROR", "the daemon failed to start").toBody()),
    );
  };
}
