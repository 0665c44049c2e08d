import { describe, it, expect } from "vitest";
import { EventEmitter } from "node:events";
import http from "node:http";
import { eventStream } from "../../src/http/sse.js";
import { daemonsOfFile, startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { waitForEvent, waitForTerminal } from "../helpers/runs.js";
import { workflow } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

const start = daemonsOfFile();
const daemon = (opts: Parameters<typeof startDaemon>[1] = {}) => start(tmpDir(), opts);

/** Two steps after a short nap: the stream is open while the run is still going. */
const NAPPY = workflow("nappy", [
  { name: "nap", run: { program: "sleep", args: ["0.5"] } },
  { name: "hello", depends_on: ["nap"], run: { program: "echo", args: ["hello"] } },
  { name: "shout", depends_on: ["hello"], run: { program: "tr", args: ["a-z", "A-Z"] } },
]);
const SLEEPY = workflow("sleepy", [
  { name: "nap", run: { program: "sleep", args: ["300"] } },
  { name: "after", depends_on: ["nap"], run: { program: "echo", args: ["late"] } },
]);

interface Frame {
  id?: string;
  event?: string;
  data?: string;
}

/** A raw SSE client: frames and comments as they arrive, and whether the server ended the stream. */
function follow(url: string, p: string, headers: Record<string, string> = { accept: "text/event-stream" }) {
  const u = new URL(url);
  const s = { status: 0, contentType: "", frames: [] as Frame[], comments: [] as string[], ended: false, error: undefined as Error | undefined, req: undefined as unknown as http.ClientRequest };
  let buf = "";
  s.req = http.get({ host: u.hostname, port: u.port, path: p, headers }, (res) => {
    s.status = res.statusCode ?? 0;
    s.contentType = String(res.headers["content-type"] ?? "");
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const f: Frame = {};
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) s.comments.push(line);
          else {
            const c = line.indexOf(": ");
            (f as Record<string, string>)[line.slice(0, c)] = line.slice(c + 2);
          }
        }
        if (f.id !== undefined || f.data !== undefined) s.frames.push(f);
      }
    });
    res.on("end", () => (s.ended = true));
    res.on("error", (e) => (s.error = e));
  });
  s.req.on("error", (e) => (s.error = e));
  return s;
}

async function createInline(t: TestDaemon, spec: Record<string, unknown>): Promise<string> {
  const r = await sdk(t.url).api.POST("/v1/runs", { body: { spec } });
  expect(r.response.status).toBe(200);
  return r.data!.run_id;
}

/** GET /v1/runs/{id}/events as JSON: the reply's text as sent. */
async function eventsText(t: TestDaemon, id: string, apiVersion?: "v2"): Promise<string> {
  const r = await sdk(t.url).api.GET("/v1/runs/{run_id}/events", { params: { path: { run_id: id }, query: { api_version: apiVersion } }, headers: { accept: "application/json" }, parseAs: "text" });
  expect(r.response.status).toBe(200);
  return r.data!;
}

/** POST /v1/runs/{id}/cancel without a body. */
const cancel = (t: TestDaemon, id: string) => sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } } });

const runOf = (t: TestDaemon, id: string) => t.d.service.get(id);

describe("GET /v1/runs/{id}/events as server-sent events", () => {
  it("follows a run from its start to its last event, then the server closes the stream", async () => {
    const t = await daemon();
    const id = await createInline(t, NAPPY);
    const s = follow(t.url, `/v1/runs/${id}/events`);
    await waitFor(() => s.ended || s.error, "the stream to end by itself");
    expect(s.error).toBeUndefined();
    expect(s.status).toBe(200);
    expect(s.contentType).toMatch(/^text\/event-stream/);
    const text = await eventsText(t, id);
    const events = JSON.parse(text) as Array<{ event_id: string; event_type: string; seq: number }>;
    // Every event, in seq order, ids = event ids, data = the JSON reply's bytes for that event.
    expect(s.frames.map((f) => f.id)).toEqual(events.map((e) => e.event_id));
    expect(s.frames.map((f) => f.event)).toEqual(events.map((e) => e.event_type));
    expect(`[${s.frames.map((f) => f.data).join(",")}]`).toBe(text);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    // The run was terminal before the stream closed, and the last event is the output's close.
    const types = events.map((e) => e.event_type);
    expect(types.slice(-3)).toEqual(["run.finished", "log.chunk", "log.closed"]);
    expect(runOf(t, id).listenerCount).toBe(0);
  });

  it("resumes after Last-Event-ID mid-run (it wins over from_event_id); an unknown id starts from the first event", async () => {
    const t = await daemon();
    const id = await createInline(t, NAPPY);
    const st = await waitForEvent(t.url, id, (e) => e.event_type === "stage.started" && e.stage_name === "nap", "nap to start");
    const at = st.events.find((e) => e.event_type === "stage.started");
    const first = st.events[0];
    const s = follow(t.url, `/v1/runs/${id}/events?from_event_id=${first.event_id}`, { accept: "text/event-stream", "last-event-id": at!.event_id });
    const fromQuery = follow(t.url, `/v1/runs/${id}/events?from_event_id=${at!.event_id}`);
    const unknown = follow(t.url, `/v1/runs/${id}/events`, { accept: "text/event-stream", "last-event-id": "not-an-event-id" });
    await waitFor(() => s.ended && fromQuery.ended && unknown.ended, "the streams to end");
    const events = await sdk(t.url).listEvents(id);
    const after = events.slice(at!.seq + 1).map((e) => e.event_id);
    expect(s.frames.map((f) => f.id)).toEqual(after);
    expect(fromQuery.frames.map((f) => f.id)).toEqual(after);
    expect(unknown.frames.map((f) => f.id)).toEqual(events.map((e) => e.event_id));
  });

  it("uses the v2 names with api_version=v2 (in event: and in data)", async () => {
    const t = await daemon();
    const id = await createInline(t, NAPPY);
    const s = follow(t.url, `/v1/runs/${id}/events?api_version=v2`);
    await waitFor(() => s.ended, "the stream to end");
    const v2 = await eventsText(t, id, "v2");
    expect(`[${s.frames.map((f) => f.data).join(",")}]`).toBe(v2);
    expect(s.frames[0].event).toBe("RunStarted");
    for (const f of s.frames) expect(JSON.parse(f.data!).event_type).toBe(f.event);
    expect(s.frames.map((f) => f.event)).toContain("RunCompleted");
  });

  it("a terminal run's stream sends what is there and closes", async () => {
    const t = await daemon();
    const id = await createInline(t, NAPPY);
    const st = await waitForTerminal(t.url, id);
    const s = follow(t.url, `/v1/runs/${id}/events`);
    await waitFor(() => s.ended, "the stream to end");
    expect(s.frames.map((f) => f.id)).toEqual(st.events.map((e) => e.event_id));
  });

  it.each([
    ["no Accept", {}],
    ["*/*", { accept: "*/*" }],
    ["application/json", { accept: "application/json" }],
    ["event-stream refused (q=0)", { accept: "text/event-stream;q=0, application/json" }],
    ["JSON preferred", { accept: "text/event-stream;q=0.5, application/json" }],
  ])("answers JSON as before for %s", async (_label, headers) => {
    const t = await daemon();
    const id = await createInline(t, NAPPY);
    await waitForTerminal(t.url, id);
    const res = await fetch(`${t.url}/v1/runs/${id}/events`, { headers });
    expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(await res.text()).toBe(await eventsText(t, id));
  });

  it("an unknown run is a 404 ApiError, an over-long Last-Event-ID a 400", async () => {
    const t = await daemon();
    const res = await fetch(`${t.url}/v1/runs/nope/events`, { headers: { accept: "text/event-stream" } });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { code: string }).code).toBe("NOT_FOUND");
    const id = await createInline(t, NAPPY);
    const bad = await fetch(`${t.url}/v1/runs/${id}/events`, { headers: { accept: "text/event-stream", "last-event-id": "x".repeat(200) } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/last-event-id/i);
  });

  it("a client that goes away leaves no listener on the run", async () => {
    const t = await daemon();
    const id = await createInline(t, SLEEPY);
    const run = runOf(t, id);
    const s = follow(t.url, `/v1/runs/${id}/events`);
    await waitFor(() => s.frames.length > 0 && run.listenerCount === 1, "the stream to be attached");
    s.req.destroy();
    await waitFor(() => run.listenerCount === 0, "the listener to be removed");
    expect((await cancel(t, id)).response.status).toBe(200);
  });

  it("sends heartbeats, and the listener's request and idle timeouts do not cut an open stream", async () => {
    const t = await daemon({ limits: { sseHeartbeatMs: 40, headersTimeoutMs: 100, requestTimeoutMs: 150, idleTimeoutMs: 100 } });
    const id = await createInline(t, SLEEPY);
    const s = follow(t.url, `/v1/runs/${id}/events`);
    // 15 heartbeats take ≥ 600 ms: several times every timeout of the listener.
    await waitFor(() => s.comments.length >= 15 || s.ended || s.error, "15 heartbeats");
    expect(s.ended).toBe(false);
    expect(s.error).toBeUndefined();
    expect(s.comments[0]).toBe(": heartbeat");
    // Cancelling ends the run: the stream sends the terminal event and closes.
    expect((await cancel(t, id)).response.status).toBe(200);
    await waitFor(() => s.ended, "the stream to end");
    expect(s.frames[s.frames.length - 1].event).toBe("run.cancelled");
  });

  it("a daemon shutting down ends its streams with the runs' terminal events", async () => {
    const t = await startDaemon(tmpDir());
    const id = await createInline(t, SLEEPY);
    const s = follow(t.url, `/v1/runs/${id}/events`);
    await waitFor(() => s.frames.length > 0 && runOf(t, id).listenerCount === 1, "the stream to be attached");
    await t.d.close();
    await waitFor(() => s.ended || s.error, "the stream to end");
    expect(s.error).toBeUndefined(); // ended by the server, not cut
    expect(s.ended).toBe(true);
    expect(s.frames[s.frames.length - 1].event).toBe("run.failed");
  });

  it("back-pressure: nothing more is written until the socket drains", async () => {
    const t = await daemon();
    // A 60 KB line: the events take more than one write batch.
    const big = workflow("big", [
      { name: "say", run: { program: "echo", args: ["x".repeat(60_000)] } },
      { name: "again", depends_on: ["say"], run: { program: "cat" } },
    ]);
    const id = await createInline(t, big);
    await waitForTerminal(t.url, id);
    const run = runOf(t, id);
    let accept = false;
    const writes: string[] = [];
    let ended = false;
    const res = Object.assign(new EventEmitter(), {
      destroy: () => undefined,
      writeHead: () => undefined,
      flushHeaders: () => undefined,
      socket: null,
      write: (chunk: string) => (writes.push(chunk), accept),
      end: () => (ended = true),
    });
    eventStream(run, 0, false, { heartbeatMs: 60_000, stallTimeoutMs: 60_000 })({} as http.IncomingMessage, res as unknown as http.ServerResponse);
    expect(writes).toHaveLength(1);
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(1);
    res.emit("drain");
    expect(writes).toHaveLength(2);
    accept = true;
    res.emit("drain");
    expect(ended).toBe(true);
    expect(writes.join("").split("\n\n").filter(Boolean)).toHaveLength(run.events.length);
    res.emit("close");
    expect(run.listenerCount).toBe(0);
  });

  it("a client that stays stalled past the stall timeout loses the connection", async () => {
    const t = await daemon();
    const id = await createInline(t, SLEEPY);
    const run = runOf(t, id);
    let destroyed = false;
    const res = Object.assign(new EventEmitter(), {
      destroy: () => ((destroyed = true), res.emit("close")),
      writeHead: () => undefined,
      flushHeaders: () => undefined,
      socket: null,
      write: () => false,
      end: () => undefined,
    });
    eventStream(run, 0, false, { heartbeatMs: 60_000, stallTimeoutMs: 30 })({} as http.IncomingMessage, res as unknown as http.ServerResponse);
    expect(run.listenerCount).toBe(1);
    await waitFor(() => destroyed, "the stalled stream to be cut off");
    expect(run.listenerCount).toBe(0);
    expect((await cancel(t, id)).response.status).toBe(200);
  });
});
