// The typed SDK (@voidbox/client) against an in-process daemon in mock mode, over a temp
// Unix socket and over TCP with a token; follow() against a small SSE stub (drops,
// heartbeats, resume) and against the daemon's JSON events route (the polling fallback).
import http from "node:http";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient as createSdkClient, DaemonUnreachableError, VoidboxError, isTerminalEvent, parseSse, type ClientOptions, type RunEvent, type VoidboxEvent } from "@voidbox/client";
import { gateReply } from "../helpers/conformance.js";
import type { Daemon } from "../../src/server.js";
import { startDaemon, tmpDir } from "../helpers/daemon.js";
import { workflow, writeSpec } from "../helpers/specs.js";

const TOKEN = "sdk-test-token-0123456789abcdef";
const specDir = tmpDir("vbx-sdk-specs-");
const HELLO = writeSpec(specDir, workflow("hello", [
  { name: "fetch", run: { program: "echo", args: ["hello"] } },
  { name: "shout", depends_on: ["fetch"], run: { program: "tr", args: ["a-z", "A-Z"] } },
]));
const SLEEPY = writeSpec(specDir, workflow("sleepy", [{ name: "nap", run: { program: "sleep", args: ["300"] } }]));
const FAILING = writeSpec(specDir, workflow("failing", [{ name: "boom", run: { program: "false" } }]));

let daemon: Daemon;
let socketUrl: string;
let tcpUrl: string;

beforeAll(async () => {
  const dir = tmpDir("vbx-sdk-");
  ({ d: daemon, url: socketUrl } = await startDaemon(path.join(dir, "state"), { auth: { token: TOKEN } }, `unix://${path.join(dir, "d.sock")}`));
  tcpUrl = (await daemon.listen("tcp://127.0.0.1:0")).url;
});
afterAll(async () => {
  await daemon?.close();
});

/** An SDK client whose replies (all but the event stream's) pass the conformance gate, like every test client's. */
function createClient(opts: ClientOptions | string) {
  const c = createSdkClient(opts);
  c.api.use({
    async onResponse({ request, response }) {
      const body = Buffer.from(await response.clone().arrayBuffer());
      gateReply({ method: request.method, path: new URL(request.url).pathname, status: response.status, headers: response.headers, body });
    },
  });
  return c;
}

async function collect(it: AsyncIterable<VoidboxEvent>): Promise<VoidboxEvent[]> {
  const out: VoidboxEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

describe("SDK over the Unix socket and over TCP", () => {
  it("reaches the daemon over the Unix socket without a token", async () => {
    const c = createClient(socketUrl);
    try {
      expect((await c.health()).status).toBe("ok");
    } finally {
      await c.close();
    }
  });

  it("over TCP: the token is sent; a wrong one is a typed 401 UNAUTHORIZED", async () => {
    const good = createClient({ url: tcpUrl, token: TOKEN });
    expect((await good.health()).status).toBe("ok");
    const bad = createClient({ url: tcpUrl, token: "wrong" });
    const err = await bad.health().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(VoidboxError);
    expect(err).toMatchObject({ status: 401, code: "UNAUTHORIZED", retryable: false });
  });

  it("runs a workflow: create, follow to the end over SSE, typed payloads, state", async () => {
    const c = createClient({ url: tcpUrl.replace("http://", "tcp://"), token: TOKEN });
    const run = await c.createRun({ file: HELLO });
    expect(run.state).toMatch(/^(pending|starting|running)$/);
    const events = await collect(c.follow(run.run_id, { pollIntervalMs: 20 }));
    const all = await c.listEvents(run.run_id);
    // follow delivers every event once, in order, including those after the terminal one.
    expect(events.map((e) => e.seq)).toEqual(all.map((e) => e.seq));
    expect(events.some(isTerminalEvent)).toBe(true);
    const chunks: string[] = [];
    for (const e of events) {
      switch (e.event_type) {
        case "log.chunk":
          chunks.push(e.payload.data);
          break;
        case "run.finished":
          expect(e.payload.exit_code).toBe(0);
          break;
      }
    }
    expect(chunks).toEqual(["HELLO"]);
    const state = await c.getRun(run.run_id);
    expect(state.status).toBe("succeeded");
    expect((await c.listStages(run.run_id)).stages.map((s) => s.name)).toEqual(["fetch", "shout"]);
    expect((await c.listRuns({ state: "terminal" })).some((r) => r.id === run.run_id)).toBe(true);
  });

  it("over the daemon's SSE: a follow stopped mid-run resumes from its last event with nothing lost or repeated", async () => {
    const c = createClient(socketUrl);
    const run = await c.createRun({ file: SLEEPY });
    const first: VoidboxEvent[] = [];
    const stop = new AbortController();
    for await (const e of c.follow(run.run_id, { signal: stop.signal })) {
      first.push(e);
      if (e.event_type === "stage.started") stop.abort();
    }
    expect(first.at(-1)?.event_type).toBe("stage.started");
    await c.cancelRun(run.run_id, "resume test");
    const rest = await collect(c.follow(run.run_id, { fromEventId: first.at(-1)!.event_id }));
    const all = await c.listEvents(run.run_id);
    expect([...first, ...rest].map((e) => e.event_id)).toEqual(all.map((e) => e.event_id));
    expect(rest.some((e) => e.event_type === "run.cancelled")).toBe(true);
    await c.close();
  });

  it("v2 names and a failing run: RunFailed with its typed payload", async () => {
    const c = createClient(socketUrl);
    const run = await c.createRun({ file: FAILING });
    const events = await collect(c.follow(run.run_id, { v2: true, pollIntervalMs: 20 }));
    const failed = events.find((e) => e.event_type === "RunFailed");
    expect(failed?.event_type_v2).toBe("RunFailed");
    expect(events.every((e) => e.event_type === e.event_type_v2)).toBe(true);
    expect((await c.getRun(run.run_id)).status).toBe("failed");
    await c.close();
  });

  it("errors are typed ApiErrors: 404 NOT_FOUND, 400 INVALID_POLICY, 409 on a terminal run_id", async () => {
    const c = createClient(socketUrl);
    await expect(c.getRun("no-such-run")).rejects.toMatchObject({ status: 404, code: "NOT_FOUND" });
    await expect(c.createRun({ file: HELLO, policy: { max_parallel_microvms_per_run: 0 } })).rejects.toMatchObject({ status: 400, code: "INVALID_POLICY" });
    const run = await c.createRun({ file: HELLO, run_id: "sdk-dup" });
    await collect(c.follow(run.run_id, { pollIntervalMs: 20 }));
    await expect(c.createRun({ file: HELLO, run_id: "sdk-dup" })).rejects.toMatchObject({ status: 409, code: "ALREADY_TERMINAL" });
    await expect(c.cancelRun("sdk-dup")).resolves.toMatchObject({ run_id: "sdk-dup", state: "succeeded" });
    await c.close();
  });

  it("no daemon: DaemonUnreachableError, on a missing socket and on a closed port", async () => {
    const c = createClient(`unix://${path.join(tmpDir("vbx-sdk-none-"), "absent.sock")}`);
    await expect(c.health()).rejects.toBeInstanceOf(DaemonUnreachableError);
    const srv = http.createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const t = createClient({ url: `http://127.0.0.1:${port}`, timeoutMs: 5_000 });
    await expect(t.health()).rejects.toBeInstanceOf(DaemonUnreachableError);
    await expect(collect(t.follow("x", { maxReconnects: 1 }))).rejects.toBeInstanceOf(DaemonUnreachableError);
  });

  it("rejects an address that is not http://, tcp:// or unix://", () => {
    expect(() => createClient("ftp://x")).toThrow(/daemon address/);
  });
});

// --- follow() over Server-Sent Events, against a stub that frames events like the daemon ---

function ev(seq: number, type: string, v2: string, payload: unknown = null): RunEvent {
  return {
    ts_ms: 1_795_237_200_000 + seq, level: "info", event_type: type, message: type, run_id: "r1",
    event_id: `0192f3a0-7c1e-7a3b-9c4d-${String(seq).padStart(12, "0")}`, seq, attempt_id: 1,
    timestamp: new Date(1_795_237_200_000 + seq).toISOString(), event_type_v2: v2, payload: payload as RunEvent["payload"],
  };
}
const STREAM: RunEvent[] = [
  ev(0, "run.started", "RunStarted"),
  ev(1, "stage.started", "StageStarted", { stage_attempt: 1 }),
  ev(2, "stage.completed", "StageSucceeded", { duration_ms: 5, exit_code: 0, stage_attempt: 1 }),
  ev(3, "run.finished", "RunCompleted", { exit_code: 0 }),
  ev(4, "log.chunk", "LogChunk", { data: "HI" }),
  ev(5, "future.thing", "FutureThing", { x: 1 }),
  ev(6, "log.closed", "LogClosed"),
];
const frame = (e: RunEvent) => `id: ${e.event_id}\nevent: ${e.event_type}\ndata: ${JSON.stringify(e)}\n\n`;

interface Stub { url: string; requests: Array<{ lastEventId?: string; from?: string | null; accept?: string }>; close(): Promise<void> }

/** Serves STREAM as SSE; `plan(n)` says, for the n-th connection, after how many events to drop it (null: to the end, then close). */
async function sseStub(plan: (n: number) => number | "silent" | null): Promise<Stub> {
  const requests: Stub["requests"] = [];
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url!, "http://x");
    if (!u.pathname.endsWith("/events")) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: "r1", status: "succeeded" }));
      return;
    }
    requests.push({ lastEventId: req.headers["last-event-id"] as string | undefined, from: u.searchParams.get("from_event_id"), accept: req.headers.accept });
    const after = (req.headers["last-event-id"] as string | undefined) ?? u.searchParams.get("from_event_id");
    const start = after ? STREAM.findIndex((e) => e.event_id === after) + 1 : 0;
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    res.write(": heartbeat\n\n");
    const p = plan(requests.length);
    if (p === "silent") return; // headers, one heartbeat, then nothing: the client's idle timeout must fire
    const todo = STREAM.slice(start, p === null ? undefined : start + p);
    // One frame split across writes, CRLF line ends on one: the parser must cope.
    for (const e of todo) {
      const f = frame(e);
      res.write(e.seq % 2 ? f.replace(/\n/g, "\r\n") : f.slice(0, 7));
      if (!(e.seq % 2)) res.write(f.slice(7));
    }
    // A drop after what was written reached the client.
    if (p === null) res.end();
    else res.write(": bye\n", () => res.socket?.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const sockets = new Set<import("node:net").Socket>();
  srv.on("connection", (s) => (sockets.add(s), s.on("close", () => sockets.delete(s))));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); srv.close(() => r()); }),
  };
}

// The stub is not the daemon: its replies are not gated.
describe("follow() over SSE", () => {
  it("delivers every event once, resuming with Last-Event-ID after dropped connections", async () => {
    const stub = await sseStub((n) => (n === 1 ? 2 : n === 2 ? 3 : null));
    try {
      const c = createSdkClient(stub.url);
      const got = await collect(c.follow("r1"));
      expect(got.map((e) => e.seq)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      expect(stub.requests.map((r) => r.lastEventId)).toEqual([undefined, STREAM[1].event_id, STREAM[4].event_id]);
      expect(stub.requests.every((r) => r.accept === "text/event-stream")).toBe(true);
      // The fallback member: an unknown type arrives untouched.
      expect(got[5]).toMatchObject({ event_type: "future.thing", payload: { x: 1 } });
    } finally {
      await stub.close();
    }
  });

  it("starts after fromEventId", async () => {
    const stub = await sseStub(() => null);
    try {
      const got = await collect(createSdkClient(stub.url).follow("r1", { fromEventId: STREAM[3].event_id }));
      expect(got.map((e) => e.seq)).toEqual([4, 5, 6]);
      expect(stub.requests[0]).toMatchObject({ lastEventId: STREAM[3].event_id, from: STREAM[3].event_id });
    } finally {
      await stub.close();
    }
  });

  it("a silent stream (no event, no heartbeat) is dropped after idleTimeoutMs and resumed", async () => {
    const stub = await sseStub((n) => (n === 1 ? "silent" : null));
    try {
      const got = await collect(createSdkClient(stub.url).follow("r1", { idleTimeoutMs: 300 }));
      expect(got).toHaveLength(STREAM.length);
      expect(stub.requests).toHaveLength(2);
    } finally {
      await stub.close();
    }
  });

  it("gives up after maxReconnects when the stream keeps dropping before the end", async () => {
    const stub = await sseStub(() => 0);
    try {
      await expect(collect(createSdkClient(stub.url).follow("r1", { maxReconnects: 2 }))).rejects.toBeInstanceOf(DaemonUnreachableError);
      expect(stub.requests).toHaveLength(3);
    } finally {
      await stub.close();
    }
  });

  it("stops quietly when its signal aborts", async () => {
    const stub = await sseStub((n) => (n === 1 ? "silent" : null));
    try {
      const ac = new AbortController();
      const it = createSdkClient(stub.url).follow("r1", { signal: ac.signal, idleTimeoutMs: 60_000 });
      const pending = collect(it);
      await new Promise<void>((r) => { const t = setInterval(() => stub.requests.length && (clearInterval(t), r()), 5); });
      ac.abort();
      await expect(pending).resolves.toEqual([]);
    } finally {
      await stub.close();
    }
  });
});

describe("follow() against a daemon without the stream (JSON replies)", () => {
  it("polls from_event_id, and ends on an empty poll after the terminal event", async () => {
    const seen: Array<string | null> = [];
    const batches = [STREAM.slice(0, 3), STREAM.slice(3, 5), STREAM.slice(5), []];
    const srv = http.createServer((req, res) => {
      seen.push(new URL(req.url!, "http://x").searchParams.get("from_event_id"));
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(batches[Math.min(seen.length - 1, batches.length - 1)]));
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    try {
      const got = await collect(createSdkClient(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`).follow("r1", { pollIntervalMs: 10 }));
      expect(got.map((e) => e.seq)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      expect(seen).toEqual([null, STREAM[2].event_id, STREAM[4].event_id, STREAM[6].event_id]);
    } finally {
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});

describe("parseSse", () => {
  it("joins multi-line data, skips comments, keeps the last id, ignores data-less blocks", async () => {
    const text = ": hi\nid: 7\nevent: x\ndata: a\ndata: b\n\nevent: nodata\n\ndata:c\n\n";
    async function* chunks() { for (const ch of text) yield new TextEncoder().encode(ch); }
    const out = [];
    for await (const m of parseSse(chunks())) out.push(m);
    expect(out).toEqual([{ id: "7", event: "x", data: "a\nb" }, { id: "7", event: "message", data: "c" }]);
  });
});
