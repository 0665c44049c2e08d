// The tests' typed HTTP client: the SDK (@voidbox/client), with every reply passed through
// the conformance gate (test/helpers/conformance.ts) before the SDK or the test sees it.
// Requests that are invalid on purpose go through http.ts instead (request(), rawHttp()).
import { createClient, type VoidboxClient } from "@voidbox/client";
import { gateReply, type Gate } from "./conformance.js";

export interface SdkOptions {
  /** Bearer token; none by default (the test daemons' listeners mostly require none). */
  token?: string | null;
  /** The gate replies pass (the gate's own tests give it one with a private tally). */
  gate?: Gate;
  timeoutMs?: number;
}

/** Statuses whose reply can carry no body (a Response cannot be built with one). */
const NULL_BODY = new Set([101, 204, 205, 304]);

/**
 * A fetch that sends each request on a connection of its own (as the raw client does: no
 * pooled socket outlives a request or counts against a daemon's connection limit), reads the
 * whole reply, gates it and hands the SDK an identical Response. The event stream is
 * passed through unread: it has no length, and its events are checked by what follows them.
 */
function gatedFetch(gate: Gate) {
  return async (input: Request | string, init: RequestInit): Promise<Response> => {
    const req = new Request(input, init);
    req.headers.set("connection", "close");
    // The abort signal is in `req` now; undici's `dispatcher` (the Unix socket) is not part of a Request.
    const res = await fetch(req, { dispatcher: (init as { dispatcher?: unknown }).dispatcher } as RequestInit);
    if ((res.headers.get("content-type") ?? "").startsWith("text/event-stream")) return res;
    const bytes = Buffer.from(await res.arrayBuffer());
    const url = new URL(req.url);
    gate({ method: req.method, path: url.pathname + url.search, status: res.status, headers: res.headers, body: bytes });
    return new Response(NULL_BODY.has(res.status) ? null : bytes, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** Clients with the default gate and timeout, by address and token: polling loops reuse one (and its Unix-socket agent). */
const clients = new Map<string, VoidboxClient>();

/** The SDK client of the daemon at `base` (http://HOST:PORT or unix:///PATH), its replies gated. */
export function sdk(base: string, opts: SdkOptions = {}): VoidboxClient {
  const make = () => createClient({ url: base, token: opts.token ?? null, timeoutMs: opts.timeoutMs ?? 20_000, fetch: gatedFetch(opts.gate ?? gateReply) });
  if (opts.gate || opts.timeoutMs !== undefined) return make();
  const key = `${base}\n${opts.token ?? ""}`;
  let client = clients.get(key);
  if (!client) clients.set(key, (client = make()));
  return client;
}
