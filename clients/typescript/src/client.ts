import createFetchClient, { type Client as FetchClient } from "openapi-fetch";
import { Agent } from "undici";
import type { components, paths } from "./generated/api.js";
import { isTerminalEvent, typed, type RunEvent, type VoidboxEvent } from "./events.js";
import { parseSse } from "./sse.js";

type Schemas = components["schemas"];
export type ApiErrorBody = Schemas["ApiError"];
export type ApiErrorCode = ApiErrorBody["code"];
export type RunState = Schemas["RunState"];
export type RunStatus = Schemas["RunStatus"];
export type RunSummary = Schemas["RunSummary"];
export type RunPage = Schemas["RunPage"];
export type CreateRunRequest = Schemas["CreateRunRequest"];
export type CreateRunResponse = Schemas["CreateRunResponse"];
export type CancelRunResponse = Schemas["CancelRunResponse"];
export type Health = Schemas["Health"];
export type DrainStatus = Schemas["DrainStatus"];
export type StageList = Schemas["StageList"];
export type StructuredOutput = Schemas["StructuredOutput"];
export type SessionMessage = Schemas["SessionMessage"];
export type SessionMessageInput = Schemas["SessionMessageInput"];
/** A run spec, as sent inline in CreateRunRequest.spec (or its YAML/JSON text). */
export type RunSpec = Schemas["RunSpec"];
/** `v2` serves each event's PascalCase name as event_type. */
export type ApiVersion = "v1" | "v2";
/** Filter of listRuns. */
export type RunFilter = "active" | "terminal";

export interface ClientOptions {
  /**
   * Where the daemon listens: `http://HOST:PORT` (or `tcp://HOST:PORT`) or
   * `unix:///PATH/voidbox.sock`. Ignored when `socketPath` is given.
   */
  url?: string;
  /** Unix socket of the daemon (no token needed there). */
  socketPath?: string;
  /** Bearer token for a TCP listener that requires one. */
  token?: string | null;
  /** Per-request timeout (ms), for everything but the event stream; default 30 s. */
  timeoutMs?: number;
  /**
   * The fetch every request goes through (default: the global fetch), e.g. to log or
   * check replies. It gets the request and an init carrying the abort signal (and, on a
   * Unix socket, undici's `dispatcher`), and must pass both on.
   */
  fetch?: (input: Request | string, init: RequestInit) => Promise<Response>;
}

/** A non-2xx reply: the daemon's ApiError, with its HTTP status. */
export class VoidboxError extends Error {
  readonly code: ApiErrorCode | string;
  readonly retryable: boolean;
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody | null,
  ) {
    super(body ? `${body.code}: ${body.message}` : `HTTP ${status}`);
    this.name = "VoidboxError";
    this.code = body?.code ?? `HTTP_${status}`;
    this.retryable = body?.retryable ?? status >= 500;
  }
}

/** No daemon answered at the address (connection refused, no socket file, timeout). */
export class DaemonUnreachableError extends Error {
  constructor(
    readonly target: string,
    readonly reason: string,
  ) {
    super(`cannot reach the voidbox daemon at ${target}: ${reason}`);
    this.name = "DaemonUnreachableError";
  }
}

export interface FollowOptions {
  /** Start after this event id (default: from the run's first event). */
  fromEventId?: string;
  /** Ask for v2 event names. */
  v2?: boolean;
  /** Stops following (the iterator then ends quietly). */
  signal?: AbortSignal;
  /** A stream silent this long (no event, no heartbeat) is dropped and resumed; default 60 s. */
  idleTimeoutMs?: number;
  /** Consecutive failed reconnects before giving up; default 10. */
  maxReconnects?: number;
  /** Poll interval against daemons that answer the events route with JSON only; default 500 ms. */
  pollIntervalMs?: number;
}

const TERMINAL_STATES: ReadonlySet<RunStatus> = new Set(["succeeded", "failed", "cancelled"]);

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

function describeCause(e: unknown): string {
  const c = (e as { cause?: { code?: string; message?: string } })?.cause;
  if (c?.code) return c.code;
  if ((e as Error)?.name === "TimeoutError") return "timed out";
  return c?.message ?? (e as Error)?.message ?? String(e);
}

function isConnectError(e: unknown): boolean {
  return e instanceof TypeError || (e as Error)?.name === "TimeoutError";
}

/** Typed client of the voidbox daemon: every operation of openapi.yaml, plus `follow`. */
export class VoidboxClient {
  /** The generated openapi-fetch client: every operation of the contract, typed. */
  readonly api: FetchClient<paths>;
  readonly target: string;
  private readonly baseUrl: string;
  private readonly dispatcher: Agent | undefined;
  private readonly token: string | null;
  private readonly timeoutMs: number;
  private readonly fetch: NonNullable<ClientOptions["fetch"]>;

  constructor(opts: ClientOptions = {}) {
    let socketPath = opts.socketPath;
    let url = opts.url ?? "";
    if (!socketPath && url.startsWith("unix://")) socketPath = url.slice("unix://".length);
    if (url.startsWith("tcp://")) url = `http://${url.slice("tcp://".length)}`;
    if (!socketPath && !/^https?:\/\//.test(url)) throw new Error(`daemon address must be http://HOST:PORT, tcp://HOST:PORT or unix:///PATH (got ${JSON.stringify(opts.url ?? "")})`);
    this.target = socketPath ? `unix://${socketPath}` : url;
    this.baseUrl = socketPath ? "http://localhost" : url.replace(/\/+$/, "");
    this.dispatcher = socketPath ? new Agent({ connect: { socketPath } }) : undefined;
    this.token = opts.token ?? null;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.fetch = opts.fetch ?? fetch;
    this.api = createFetchClient<paths>({
      baseUrl: this.baseUrl,
      headers: this.token ? { authorization: `Bearer ${this.token}` } : {},
      fetch: (req: Request) => this.send(req, this.timeoutMs),
    });
  }

  /** Releases the Unix-socket connection pool. */
  async close(): Promise<void> {
    await this.dispatcher?.close();
  }

  /** fetch over the right transport, bounded by `timeoutMs` (null: only the caller's signal). */
  private async send(req: Request | string, timeoutMs: number | null, init: RequestInit = {}): Promise<Response> {
    const signals = [init.signal, typeof req === "string" ? undefined : req.signal].filter((s): s is AbortSignal => !!s);
    if (timeoutMs !== null) signals.push(AbortSignal.timeout(timeoutMs));
    const extra = this.dispatcher ? { dispatcher: this.dispatcher } : {};
    try {
      return await this.fetch(req, { ...init, signal: AbortSignal.any(signals), ...extra } as RequestInit);
    } catch (e) {
      // The caller's own abort is theirs to handle; a refused connection or a timeout means no daemon answered.
      if (init.signal?.aborted || (typeof req !== "string" && req.signal.aborted)) throw e;
      if (isConnectError(e)) throw new DaemonUnreachableError(this.target, describeCause(e));
      throw e;
    }
  }

  private async unwrap<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
    const { data, error, response } = await p;
    if (!response.ok) throw new VoidboxError(response.status, (error as ApiErrorBody) ?? null);
    return data as T;
  }

  health(): Promise<Health> {
    return this.unwrap(this.api.GET("/v1/health"));
  }
  /** Starts a drain (idempotent): no new runs, the active ones finish, then the daemon exits. */
  drain(): Promise<DrainStatus> {
    return this.unwrap(this.api.POST("/v1/drain"));
  }
  createRun(body: CreateRunRequest): Promise<CreateRunResponse> {
    return this.unwrap(this.api.POST("/v1/runs", { body }));
  }
  /** Every run with its events (one reply; see listRunPage for large histories). */
  listRuns(opts: { state?: RunFilter; apiVersion?: ApiVersion } = {}): Promise<RunState[]> {
    // Without limit/cursor the daemon answers a RunList.
    return this.unwrap(this.api.GET("/v1/runs", { params: { query: { state: opts.state, api_version: opts.apiVersion } } })).then((r) => r.runs as RunState[]);
  }
  /** One page of run summaries (no events), oldest first; pass `next_cursor` back as `cursor` for the next. */
  listRunPage(opts: { limit?: number; cursor?: string; state?: RunFilter } = {}): Promise<RunPage> {
    const query = { limit: opts.limit ?? 100, cursor: opts.cursor, state: opts.state };
    return this.unwrap(this.api.GET("/v1/runs", { params: { query } })) as Promise<RunPage>;
  }
  /** Every run's summary, a page at a time. */
  async *runSummaries(opts: { pageSize?: number; state?: RunFilter } = {}): AsyncGenerator<RunSummary> {
    let cursor: string | undefined;
    do {
      const page = await this.listRunPage({ limit: opts.pageSize, cursor, state: opts.state });
      yield* page.runs;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }
  getRun(runId: string, opts: { apiVersion?: ApiVersion } = {}): Promise<RunState> {
    return this.unwrap(this.api.GET("/v1/runs/{run_id}", { params: { path: { run_id: runId }, query: { api_version: opts.apiVersion } } }));
  }
  /** The run's events after `fromEventId` (all without it), typed by event_type. */
  async listEvents(runId: string, opts: { fromEventId?: string; apiVersion?: ApiVersion } = {}): Promise<VoidboxEvent[]> {
    const events = await this.unwrap(
      this.api.GET("/v1/runs/{run_id}/events", {
        params: { path: { run_id: runId }, query: { from_event_id: opts.fromEventId, api_version: opts.apiVersion } },
        headers: { accept: "application/json" },
      }),
    );
    // Asked for JSON: the array (the route's other media type is the event stream, see follow).
    return (events as RunEvent[]).map(typed);
  }
  cancelRun(runId: string, reason?: string): Promise<CancelRunResponse> {
    return this.unwrap(this.api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: runId } }, body: reason === undefined ? {} : { reason } }));
  }
  listStages(runId: string): Promise<StageList> {
    return this.unwrap(this.api.GET("/v1/runs/{run_id}/stages", { params: { path: { run_id: runId } } }));
  }
  getStageOutputFile(runId: string, stage: string): Promise<StructuredOutput> {
    return this.unwrap(this.api.GET("/v1/runs/{run_id}/stages/{stage}/output-file", { params: { path: { run_id: runId, stage } } }));
  }
  /** An artifact's bytes and media type. */
  async getStageArtifact(runId: string, stage: string, name: string): Promise<{ bytes: Uint8Array; mediaType: string }> {
    const { error, response } = await this.api.GET("/v1/runs/{run_id}/stages/{stage}/artifacts/{name}", {
      params: { path: { run_id: runId, stage, name } },
      parseAs: "stream",
    });
    if (!response.ok) throw new VoidboxError(response.status, (error as ApiErrorBody) ?? null);
    return { bytes: new Uint8Array(await response.arrayBuffer()), mediaType: response.headers.get("content-type") ?? "application/octet-stream" };
  }
  listSessionMessages(sessionId: string): Promise<SessionMessage[]> {
    return this.unwrap(this.api.GET("/v1/sessions/{session_id}/messages", { params: { path: { session_id: sessionId } } }));
  }
  appendSessionMessage(sessionId: string, message: SessionMessageInput): Promise<SessionMessage> {
    return this.unwrap(this.api.POST("/v1/sessions/{session_id}/messages", { params: { path: { session_id: sessionId } }, body: message }));
  }

  /**
   * The run's events as they happen, until its last one. Uses the Server-Sent Events
   * stream and resumes after a dropped connection from the last event it delivered
   * (Last-Event-ID); against a daemon that answers the events route with JSON only, it
   * polls `from_event_id` instead. Ends when the daemon closes the stream after the
   * run's terminal event (or, polling, when a poll after the terminal event finds
   * nothing new), or quietly when `signal` aborts.
   */
  async *follow(runId: string, opts: FollowOptions = {}): AsyncGenerator<VoidboxEvent> {
    let last = opts.fromEventId;
    let terminalSeen = false;
    let failures = 0;
    const maxReconnects = opts.maxReconnects ?? 10;
    const idleMs = opts.idleTimeoutMs ?? 60_000;
    const signal = opts.signal;
    while (!signal?.aborted) {
      const url = new URL(`${this.baseUrl}/v1/runs/${encodeURIComponent(runId)}/events`);
      if (last) url.searchParams.set("from_event_id", last);
      if (opts.v2) url.searchParams.set("api_version", "v2");
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (last) headers["last-event-id"] = last;
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      const conn = new AbortController();
      const stop = () => conn.abort();
      signal?.addEventListener("abort", stop, { once: true });
      let idle: NodeJS.Timeout | undefined;
      const touch = () => {
        clearTimeout(idle);
        idle = setTimeout(() => conn.abort(new Error(`no event or heartbeat for ${idleMs} ms`)), idleMs);
      };
      try {
        touch();
        let res: Response;
        try {
          res = await this.send(url.toString(), null, { headers, signal: conn.signal });
        } catch (e) {
          if (signal?.aborted) return;
          if (!(e instanceof DaemonUnreachableError) && !conn.signal.aborted) throw e;
          if (++failures > maxReconnects) throw e instanceof DaemonUnreachableError ? e : new DaemonUnreachableError(this.target, describeCause(e));
          await sleep(Math.min(200 * 2 ** failures, 5_000), signal);
          continue;
        }
        if (!res.ok) {
          const body = (await res.json().catch(() => null)) as ApiErrorBody | null;
          throw new VoidboxError(res.status, body);
        }
        const type = res.headers.get("content-type") ?? "";
        if (!type.startsWith("text/event-stream")) {
          // A daemon without the stream: one poll's worth of events.
          const events = (await res.json()) as RunEvent[];
          failures = 0;
          for (const e of events) {
            if (signal?.aborted) return;
            last = e.event_id;
            if (isTerminalEvent(e)) terminalSeen = true;
            yield typed(e);
          }
          // After the terminal event, one more poll (at once) picks up the output events that follow it.
          if (terminalSeen && events.length === 0) return;
          if (!terminalSeen) await sleep(opts.pollIntervalMs ?? 500, signal);
          continue;
        }
        let dropped = false;
        try {
          for await (const msg of parseSse(res.body as unknown as AsyncIterable<Uint8Array>, touch)) {
            // Nothing more once the caller stopped, even what was already received.
            if (signal?.aborted) return;
            const e = JSON.parse(msg.data) as RunEvent;
            last = msg.id ?? e.event_id;
            failures = 0;
            if (isTerminalEvent(e)) terminalSeen = true;
            yield typed(e);
          }
        } catch (e) {
          if (signal?.aborted) return;
          if (e instanceof SyntaxError) throw e;
          dropped = true;
        }
        // The daemon closes the stream after the run's last event. A clean close before the
        // terminal event was seen (a resume after it, or a proxy or shutdown closing the
        // stream) is the end only if the run is terminal.
        if (!dropped && (terminalSeen || TERMINAL_STATES.has((await this.getRun(runId)).status))) return;
        if (++failures > maxReconnects) throw new DaemonUnreachableError(this.target, "the event stream kept dropping");
        await sleep(Math.min(100 * 2 ** failures, 5_000), signal);
      } finally {
        clearTimeout(idle);
        signal?.removeEventListener("abort", stop);
      }
    }
  }
}

/** A client for the daemon at `url` (http://, tcp:// or unix://), or per `opts`. */
export function createClient(opts: ClientOptions | string = {}): VoidboxClient {
  return new VoidboxClient(typeof opts === "string" ? { url: opts } : opts);
}
