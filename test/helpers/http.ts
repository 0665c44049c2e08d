// The test kit's untyped HTTP clients, for what the typed client (the SDK, helpers/sdk.ts)
// cannot send or should not judge: deliberately invalid requests (bad bodies, hostile paths,
// wrong headers) and assertions on the wire itself. Every reply passes the conformance gate
// (test/helpers/conformance.ts: declared status, media type, headers and body schema, one
// Content-Length) before the test sees it, unless a test says it inspects it itself.
//   - request(base, path, opts): one request on a fresh connection, TCP or a Unix socket,
//     the path sent exactly as given (`..` and `%2e%2e` reach the server). ApiClient (the
//     contract suite's client: per target its kind, token, query and the mock's relaxations
//     of the gate) sends through it.
//   - rawHttp(): bytes over a plain socket, for tests of the wire itself.
import http from "node:http";
import { connect } from "node:net";
import type { components } from "../../generated/api.js";
import { gateReply, replyViolations, skipReply, type Gate } from "./conformance.js";
import { matchOperation } from "./openapi.js";
import type { Target, TargetKind } from "./targets.js";



const TEST_TOKEN = "test-token";

export interface ApiResponse<T = unknown> {
  status: number;
  headers: Headers;
  contentType: string;
  bytes: Buffer;
  text: string;
  /** Parsed JSON body, or undefined when the reply is not JSON. */
  body: T;
  operationId?: string;
}

export interface RequestOptions {
  /** JSON value to send (serialised, content-type application/json). */
  json?: unknown;
  /** Raw body to send as is (content-type application/json unless `contentType` says otherwise). */
  raw?: string | Uint8Array;
  contentType?: string | null;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** Bearer token; `null` sends no Authorization header. Default: TEST_TOKEN. */
  token?: string | null;
  /**
   * "strict" (default): the reply must conform to openapi.yaml.
   * "skip-on-prism": the request is deliberately malformed and Prism answers it with its own
   * (non-contract) body — see the relaxation list in test/contract/README.md.
   * "none": do not check (only for replies a test inspects itself).
   */
  conformance?: "strict" | "skip-on-prism" | "none";
}

/** Problems of a reply versus openapi.yaml; `[]` when it conforms. */
export function conformanceProblems(method: string, pathname: string, res: ApiResponse): string[] {
  return replyViolations({ method, path: pathname, status: res.status, headers: res.headers, body: res.bytes }).map(
    (v) => `[${v.rule}] ${v.message}`,
  );
}

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly kind: TargetKind,
    /** The conformance gate replies pass (the gate's own tests give it one with a private tally). */
    private readonly gate: Gate = gateReply,
    /** The bearer token sent unless a request says otherwise. */
    readonly token: string = TEST_TOKEN,
  ) {}

  static for(target: Target): ApiClient {
    return new ApiClient(target.url, target.kind, gateReply, target.token ?? TEST_TOKEN);
  }

  async request<T = unknown>(method: string, pathname: string, opts: RequestOptions = {}): Promise<ApiResponse<T>> {
    const url = new URL(this.baseUrl + pathname);
    for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
    const headers: Record<string, string> = { accept: "application/json", ...(opts.headers ?? {}) };
    const token = opts.token === undefined ? this.token : opts.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: string | Uint8Array | undefined;
    if (opts.json !== undefined) body = JSON.stringify(opts.json);
    else if (opts.raw !== undefined) body = opts.raw;
    const contentType = opts.contentType === undefined ? (body !== undefined ? "application/json" : null) : opts.contentType;
    if (contentType) headers["content-type"] = contentType;

    const reply = await request(this.baseUrl, url.pathname + url.search, { method, body, raw: true, headers, conformance: "caller" });
    const { bytes, text } = reply;
    const ct = reply.contentType;
    let parsed: unknown;
    if (text.length > 0 && /json/i.test(ct)) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    const res: ApiResponse<T> = {
      status: reply.status,
      headers: toHeaders(reply.headers),
      contentType: ct,
      bytes,
      text,
      body: parsed as T,
      operationId: matchOperation(method, url.pathname)?.operationId,
    };
    this.check(method, url.pathname, res, opts.conformance ?? "strict");
    return res;
  }

  private check(method: string, pathname: string, res: ApiResponse, mode: RequestOptions["conformance"]): void {
    if (mode === "none") return skipReply();
    if (this.kind === "prism") {
      if (mode === "skip-on-prism") return skipReply();
      // Prism's own errors (no route matched, request violations without a declared 4xx)
      // are RFC 7807 problem+json, not the contract's ApiError: relaxation R1.
      if (/problem\+json/i.test(res.contentType)) return skipReply();
    }
    this.gate({ method, path: pathname, status: res.status, headers: res.headers, body: res.bytes });
  }

  get<T = unknown>(pathname: string, opts?: RequestOptions) {
    return this.request<T>("GET", pathname, opts);
  }
  post<T = unknown>(pathname: string, opts?: RequestOptions) {
    return this.request<T>("POST", pathname, opts);
  }
}

export type ApiError = components["schemas"]["ApiError"];

/** A reply as request() returns it; `json` is the parsed body (undefined when it is not JSON). */
export interface Reply<T = unknown> {
  status: number;
  headers: http.IncomingHttpHeaders;
  contentType: string;
  bytes: Buffer;
  text: string;
  json: T;
}

export interface HttpOptions {
  method?: string;
  /** JSON-serialised unless `raw: true` (then a Buffer or string is sent as it is). */
  body?: unknown;
  raw?: boolean;
  /** Content-Type of a raw body (JSON bodies are application/json). */
  contentType?: string;
  headers?: Record<string, string>;
  token?: string;
  timeoutMs?: number;
  /**
   * "strict" (default): the reply must pass the conformance gate (openapi.yaml); "none" for
   * replies a test inspects itself (counted as unchecked); "caller": the caller gates it.
   */
  conformance?: "strict" | "none" | "caller";
}

/** Node's header object as fetch's Headers (what ApiClient's replies carry). */
function toHeaders(h: http.IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const [k, v] of Object.entries(h)) if (v !== undefined) for (const x of Array.isArray(v) ? v : [v]) out.append(k, x);
  return out;
}

/** One HTTP request on a fresh connection; `base` is http://host:port or unix:///path; `pathname` is sent exactly as given. */
export function request<T = unknown>(base: string, pathname: string, o: HttpOptions = {}): Promise<Reply<T>> {
  const method = o.method ?? (o.body === undefined ? "GET" : "POST");
  let payload: Buffer | undefined;
  if (o.body !== undefined) payload = o.raw ? (o.body instanceof Uint8Array ? Buffer.from(o.body) : Buffer.from(String(o.body))) : Buffer.from(JSON.stringify(o.body));
  const headers: Record<string, string> = { ...(payload && !o.raw ? { "content-type": "application/json" } : {}), ...(o.contentType ? { "content-type": o.contentType } : {}), ...(o.headers ?? {}) };
  // A body-less POST says so (Content-Length: 0), as fetch does.
  if (payload || !["GET", "HEAD"].includes(method)) headers["content-length"] = String(payload?.length ?? 0);
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  const target: http.RequestOptions = base.startsWith("unix://")
    ? { socketPath: base.slice("unix://".length) }
    : (() => {
        const u = new URL(base);
        return { host: u.hostname, port: Number(u.port) };
      })();
  const timeoutMs = o.timeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, method, path: pathname, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const bytes = Buffer.concat(chunks);
        try {
          if (o.conformance === "none") skipReply();
          else if (o.conformance !== "caller") gateReply({ method, path: pathname, status: res.statusCode ?? 0, headers: res.headers, body: bytes });
        } catch (err) {
          return reject(err);
        }
        const text = bytes.toString("utf8");
        let json: unknown = undefined;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, contentType: res.headers["content-type"] ?? "", bytes, text, json: json as T });
      });
    });
    req.on("error", reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${pathname}: no reply within ${timeoutMs} ms`)));
    if (payload) req.write(payload);
    req.end();
  });
}

/** The reply's body as the ApiError it must be (throws when it is not one); a reply of request() or ApiClient, or an SDK `.api` result. */
export function errorOf(r: { status: number; json?: unknown; body?: unknown; text?: string } | { response: Response; error?: unknown }): ApiError {
  const [status, v] = "response" in r ? [r.response.status, r.error] : [r.status, "json" in r ? r.json : r.body];
  if (!isApiError(v)) throw new Error(`reply ${status} is not an ApiError: ${("text" in r && r.text) || JSON.stringify(v)}`);
  return v;
}

/** Whether a reply body is an ApiError `{code, message, retryable}`. */
export function isApiError(v: unknown): v is ApiError {
  if (!v || typeof v !== "object") return false;
  const o = v as Record<string, unknown>;
  return typeof o.code === "string" && /^[A-Z][A-Z0-9_]*$/.test(o.code) && typeof o.message === "string" && typeof o.retryable === "boolean";
}

export interface RawReply {
  statusLine: string;
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  raw: Buffer;
}

/**
 * Speak HTTP/1.1 over a plain socket the way the orchestrator's raw clients do: send the
 * request, read until the server closes the connection (EOF), split at the first blank line.
 */
export function rawHttp(baseUrl: string, request: string, timeoutMs = 10_000): Promise<RawReply> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({ host: hostname, port: Number(port) });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no EOF within ${timeoutMs} ms (server did not honour Connection: close?)`));
    }, timeoutMs);
    socket.on("connect", () => socket.write(request));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on("end", () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks);
      const sep = raw.indexOf("\r\n\r\n");
      if (sep < 0) return reject(new Error(`no header/body separator in reply: ${raw.toString("latin1")}`));
      const head = raw.subarray(0, sep).toString("latin1").split("\r\n");
      const statusLine = head[0] ?? "";
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(":");
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({
        statusLine,
        status: Number(statusLine.split(" ")[1]),
        headers,
        body: raw.subarray(sep + 4),
        raw,
      });
      socket.end();
    });
  });
}
