import http from "node:http";
import type { components } from "../../generated/api.js";

export type RunState = components["schemas"]["RunState"];
export type RunEvent = components["schemas"]["RunEvent"];
export type CreateRunRequest = components["schemas"]["CreateRunRequest"];
export type CreateRunResponse = components["schemas"]["CreateRunResponse"];
export type CancelRunResponse = components["schemas"]["CancelRunResponse"];
export type Health = components["schemas"]["Health"];
export type DrainStatus = components["schemas"]["DrainStatus"];
export type ApiErrorBody = components["schemas"]["ApiError"];

const TERMINAL_EVENTS = new Set(["run.finished", "run.failed", "run.cancelled"]);

export class ClientError extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody | null,
    message: string,
  ) {
    super(message);
  }
}

/** A thin client of the daemon API over TCP (http://…) or a Unix socket (unix:///…). */
export class Client {
  constructor(
    private readonly url: string,
    private readonly token: string | null,
    private readonly timeoutMs = 30_000,
  ) {}

  private request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: "application/json" };
    if (payload) Object.assign(headers, { "content-type": "application/json", "content-length": String(payload.length) });
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const target = this.url.startsWith("unix://")
      ? { socketPath: this.url.slice("unix://".length), path }
      : (() => {
          const u = new URL(this.url);
          return { host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port, path };
        })();
    return new Promise<T>((resolve, reject) => {
      const req = http.request({ ...target, method, headers, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown = null;
          try {
            json = text ? JSON.parse(text) : null;
          } catch {
            /* not JSON: reported below */
          }
          if (res.statusCode && res.statusCode < 300) return resolve(json as T);
          const err = json as ApiErrorBody | null;
          reject(new ClientError(res.statusCode ?? 0, err, err?.code ? `${err.code}: ${err.message}` : `HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        });
      });
      req.on("timeout", () => req.destroy(new Error(`request to ${this.url}${path} timed out after ${this.timeoutMs} ms`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  health = () => this.request<Health>("GET", "/v1/health");
  /** Starts a drain: no new runs, active ones finish, then the daemon exits. */
  drain = () => this.request<DrainStatus>("POST", "/v1/drain");
  createRun = (req: CreateRunRequest) => this.request<CreateRunResponse>("POST", "/v1/runs", req);
  getRun = (id: string) => this.request<RunState>("GET", `/v1/runs/${encodeURIComponent(id)}`);
  listRuns = (state?: "active" | "terminal") => this.request<{ runs: RunState[] }>("GET", `/v1/runs${state ? `?state=${state}` : ""}`);
  cancelRun = (id: string, reason?: string) => this.request<CancelRunResponse>("POST", `/v1/runs/${encodeURIComponent(id)}/cancel`, reason ? { reason } : {});
  events = (id: string, fromEventId?: string) =>
    this.request<RunEvent[]>("GET", `/v1/runs/${encodeURIComponent(id)}/events${fromEventId ? `?from_event_id=${encodeURIComponent(fromEventId)}` : ""}`);

  /**
   * Yields a run's events as they happen until its terminal event (polling with a
   * bounded interval). The daemon appends a terminal event and the log events that
   * follow it in one step, so the batch holding it holds them too.
   */
  async *follow(id: string, pollMs = 200): AsyncGenerator<RunEvent> {
    let last: string | undefined;
    for (;;) {
      const batch = await this.events(id, last);
      for (const e of batch) yield e;
      if (batch.some((e) => TERMINAL_EVENTS.has(e.event_type))) return;
      if (batch.length) last = batch[batch.length - 1].event_id;
      else await new Promise((r) => setTimeout(r, pollMs));
    }
  }
}
