// HTTP contract suite: the endpoints, errors, lifecycle, v2 naming, resume and cancel rules of openapi.yaml, run unchanged against
//   (a) the in-process server, (b) the daemon as a separate process, (c) the Prism mock.
// Every reply passes the conformance gate (test/helpers/conformance.ts: declared status,
// media type, headers and body schema, one Content-Length) before a test looks at it.
//
// ─── Prism relaxation list ────────────────────────────────────────────────────────────────
// Prism answers from openapi.yaml alone, so it cannot know what needs state or semantics.
// Cases that depend on these are skipped on Prism (`it.skipIf(isPrism)`) or assert less there;
// each such place names the relaxation it relies on.
//   R1  Unknown routes (and violations with no declared 4xx) get Prism's own RFC 7807
//       `application/problem+json` body, not an ApiError. Only the status is asserted.
//   R2  Malformed JSON bodies get Prism's own 400 `{"error":{"code":"invalid_json"}}`.
//       Only the status (400) is asserted.
//   R3  Every request violation is answered with the FIRST declared example of the
//       operation's 422, else 400, response: the `code`/`message` are the example's, not the
//       request's (e.g. a bad policy answers the INVALID_SPEC example; a bad stage id on
//       output-file answers the 422 example). Asserted: a 4xx from the declared set, and
//       (via the client) that the body is the declared ApiError.
//   R4  No persistence or behaviour: no runs, no events, no state transitions, no
//       idempotency/409, no cancel semantics, no 404 for unknown runs (any id gets the 200
//       example), no policy enforcement, no v2 renaming, no filtering by `state` or
//       `from_event_id`. All lifecycle cases are skipped.
//   R5  No request-body cap: a >4 MiB body is accepted (200), never 413.
//   R6  Prism enforces the declared security: a bearer token, or (the alternative an
//       auth-less listener is declared with) no Authorization header at all. Our servers run
//       with auth disabled (`auth: null` / `--no-auth`) and must accept a request without one;
//       so does Prism, so that case runs there too.
// README ("The mock") tells consumers the same: R1–R3 are decided by Prism's engine, not the spec.
// What Prism is still asserted on: health shape, the example reply of every operation
// (status + schema), 400 for invalid bodies/malformed JSON, 4xx for unsafe ids, 401
// without a token, unknown query parameters ignored, 404 for unknown routes, and a raw
// `Connection: close` client reading to EOF with Content-Length.
// ──────────────────────────────────────────────────────────────────────────────────────────
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, rawHttp, conformanceProblems, type ApiResponse } from "../helpers/http.js";
import { validateResponse, validateSchema } from "../helpers/openapi.js";
import {
  RFC3339,
  UUID_V7,
  isTerminal,
  types,
  uniqueRunId,
  v2Name,
  waitForEvent,
  waitForRun,
  waitForTerminal,
  runRequest,
  writeFixtures,
  type Fixtures,
  type RunEvent,
  type RunState,
} from "../helpers/runs.js";
import { makeStateDir, selectedTargets, type Target } from "../helpers/targets.js";

const ACTIVE = ["pending", "starting", "running"];

/** The stage an event belongs to (context field, else payload). */
function stageOf(e: RunEvent): string | undefined {
  const p = (e.payload ?? {}) as Record<string, unknown>;
  return (e.stage_name ?? (p.stage as string | undefined) ?? (p.stage_name as string | undefined)) ?? undefined;
}

function payload(e: RunEvent | undefined): Record<string, any> {
  return (e?.payload ?? {}) as Record<string, any>;
}

/** Envelope rules of openapi.yaml's RunEvent for one run's (legacy-named) events. */
function expectEnvelope(run: RunState, events: RunEvent[] = run.events): void {
  const ids = new Set<string>();
  events.forEach((e, i) => {
    expect(e.seq, `seq of event #${i} (${e.event_type})`).toBe(i);
    expect(e.event_id, `event_id of ${e.event_type}`).toMatch(UUID_V7);
    ids.add(e.event_id);
    expect(e.run_id).toBe(run.id);
    expect(e.attempt_id).toBe(run.attempt_id);
    expect(e.timestamp).toMatch(RFC3339);
    expect(Number.isNaN(Date.parse(e.timestamp))).toBe(false);
    expect(Number.isInteger(e.ts_ms)).toBe(true);
    expect(e.event_type_v2, `event_type_v2 of ${e.event_type}`).toBe(v2Name(e.event_type));
  });
  expect(ids.size, "event ids are unique").toBe(events.length);
  expect(run.started_at).toMatch(RFC3339);
  expect(run.updated_at).toMatch(RFC3339);
}

/**
 * Prism reports the request violations it found in the `sl-violations` header: on Prism this
 * checks that openapi.yaml itself rejects the request, and for the right field.
 */
function expectPrismViolation(res: ApiResponse, field: string): void {
  const header = res.headers.get("sl-violations") ?? "";
  expect(header, "sl-violations header").not.toBe("");
  expect(header).toMatch(new RegExp(field));
}

describe.each(selectedTargets().map((f) => [f.name, f] as const))("HTTP contract — %s", (_name, factory) => {
  const isPrism = factory.kind === "prism";
  let target: Target;
  let api: ApiClient;
  let fx: Fixtures;
  const longRuns = new Set<string>(); // sleep runs to cancel before shutdown

  beforeAll(async () => {
    fx = writeFixtures(factory.fixtures);
    target = await factory.start();
    api = ApiClient.for(target);
  });

  afterAll(async () => {
    if (target && !isPrism) {
      for (const id of longRuns) {
        await api.post(`/v1/runs/${id}/cancel`, { conformance: "none" }).catch(() => undefined);
      }
    }
    await target?.close();
    fx?.cleanup();
  });

  const create = (body: unknown, opts: Parameters<ApiClient["post"]>[1] = {}) =>
    api.post("/v1/runs", { json: runRequest(fx, body), ...opts });

  /** Start a long-running run whose `nap` stage is running (waited for via events). */
  async function startLongRun(runId?: string): Promise<string> {
    const res = await create(runId ? { file: fx.sleep, run_id: runId } : { file: fx.sleep });
    expect(res.status).toBe(200);
    const id = res.body.run_id as string;
    longRuns.add(id);
    await waitForRun(api, id, (r) => r.events.some((e) => e.event_type === "stage.started" && stageOf(e) === "nap"), {
      what: "stage nap started",
    });
    return id;
  }

  // A finished echo|tr workflow, shared by the read-only tests below (created once per target).
  let helloPromise: Promise<RunState> | undefined;
  const helloRun = () =>
    (helloPromise ??= (async () => {
      const res = await create({ file: fx.hello });
      expect(res.status).toBe(200);
      return waitForTerminal(api, res.body.run_id);
    })());

  // ── Section 1–3: transport, health, errors ─────────────────────────────────────────────
  describe("health, auth, routing, errors", () => {
    it("GET /v1/health → 200 {status: ok, persistence: <name>}", async () => {
      const res = await api.get("/v1/health");
      expect(res.status).toBe(200);
      expect(res.body.status).toBe("ok");
      expect(typeof res.body.persistence).toBe("string");
      expect(res.body.persistence.length).toBeGreaterThan(0);
    });

    // A target given a token (`make conformance TOKEN=…`) requires it: this case is for auth-less ones.
    it.skipIf(factory.requiresToken)("auth disabled: a request without a token is served (R6)", async () => {
      const res = await api.get("/v1/health", { token: null });
      expect(res.status).toBe(200);
    });

    // The spec declares an auth-less listener (`security: [{bearerAuth: []}, {}]`), so Prism
    // serves a request without Authorization; one that is not a bearer token is 401.
    it.runIf(isPrism)("declared bearer auth: an Authorization that is not a bearer token → 401 UNAUTHORIZED (mock only: the servers under test run without auth)", async () => {
      for (const [method, path, json] of [
        ["GET", "/v1/health", undefined],
        ["GET", "/v1/runs", undefined],
        ["POST", "/v1/runs", { file: "x.yaml" }],
      ] as const) {
        const res = await api.request(method, path, { token: null, json, headers: { authorization: "Basic dm9pZDpib3g=" } });
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(res.body.code).toBe("UNAUTHORIZED");
        expect(res.body.retryable).toBe(false);
        expect((await api.request(method, path, { token: null, json })).status, `${method} ${path} without Authorization`).toBe(200);
      }
    });

    it("unknown route → 404 NOT_FOUND (R1 on Prism: status only)", async () => {
      const routes: Array<[string, string]> = [
        ["GET", "/v1/nope"],
        ["GET", "/v2/runs"],
        ["GET", "/"],
        ["POST", "/v1/health/extra"],
      ];
      if (!isPrism) routes.push(["DELETE", "/v1/runs"], ["PUT", "/v1/health"]);
      for (const [method, path] of routes) {
        const res = await api.request(method, path);
        expect(res.status, `${method} ${path}`).toBe(404);
        if (!isPrism) {
          expect(res.body.code).toBe("NOT_FOUND");
          expect(res.body.retryable).toBe(false);
          expect(res.body.message).toMatch(/not found/i);
        }
      }
    });

    it("unknown query parameters are ignored", async () => {
      expect((await api.get("/v1/health", { query: { verbose: "1", x: "y" } })).status).toBe(200);
      expect((await api.get("/v1/runs", { query: { foo: "bar", limit: "3", state: "active" } })).status).toBe(200);
      if (!isPrism) {
        const run = await helloRun();
        expect((await api.get(`/v1/runs/${run.id}`, { query: { junk: "1", api_version: "v1" } })).status).toBe(200);
        expect((await api.get(`/v1/runs/${run.id}/events`, { query: { page: "2" } })).status).toBe(200);
        expect((await api.get(`/v1/runs/${run.id}/stages`, { query: { x: "1" } })).status).toBe(200);
      }
    });

    it("raw-socket client with Connection: close reads to EOF and gets Content-Length", async () => {
      const host = new URL(target.url).host;
      const health = await rawHttp(
        target.url,
        `GET /v1/health HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${api.token}\r\nConnection: close\r\n\r\n`,
      );
      expect(health.status).toBe(200);
      expect(health.headers["content-length"]).toBeDefined();
      expect(health.headers["transfer-encoding"]).toBeUndefined();
      expect(health.body.length).toBe(Number(health.headers["content-length"]));
      expect(validateResponse("getHealth", 200, JSON.parse(health.body.toString("utf8")))).toEqual([]);

      const body = JSON.stringify(runRequest(fx, { file: isPrism ? "examples/hello.yaml" : fx.hello }));
      const created = await rawHttp(
        target.url,
        `POST /v1/runs HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${api.token}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      expect(created.status).toBe(200);
      expect(created.body.length).toBe(Number(created.headers["content-length"]));
      expect(validateResponse("createRun", 200, JSON.parse(created.body.toString("utf8")))).toEqual([]);

      if (!isPrism) {
        const missing = await rawHttp(
          target.url,
          `GET /v1/runs/no-such-run HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${api.token}\r\nConnection: close\r\n\r\n`,
        );
        expect(missing.status).toBe(404);
        expect(missing.body.length).toBe(Number(missing.headers["content-length"]));
        expect(validateResponse("getRun", 404, JSON.parse(missing.body.toString("utf8")))).toEqual([]);
      }
    });

    it.skipIf(isPrism)("body over 4 MiB → 413 PAYLOAD_TOO_LARGE as a JSON ApiError (defect 8; R5)", async () => {
      const pad = "a".repeat(4 * 1024 * 1024 + 1024);
      const big = await create({ file: fx.hello, pad });
      expect(big.status).toBe(413);
      expect(big.body.code).toBe("PAYLOAD_TOO_LARGE");
      expect(big.body.retryable).toBe(false);

      const msg = await api.post("/v1/sessions/big-session/messages", { json: { role: "user", content: pad } });
      expect(msg.status).toBe(413);
      expect(msg.body.code).toBe("PAYLOAD_TOO_LARGE");
    });
  });

  // ── Section 2–4: POST /v1/runs validation ──────────────────────────────────────────────
  describe("POST /v1/runs", () => {
    it("creates a run → 200 {run_id, attempt_id, state}", async () => {
      const res = await create({ file: isPrism ? "examples/hello.yaml" : fx.hello });
      expect(res.status).toBe(200);
      expect(typeof res.body.run_id).toBe("string");
      expect(res.body.run_id.length).toBeGreaterThan(0);
      expect(Number.isInteger(res.body.attempt_id)).toBe(true);
      if (!isPrism) {
        expect(res.body.attempt_id).toBe(1);
        expect(ACTIVE).toContain(res.body.state);
        expect((await api.get(`/v1/runs/${res.body.run_id}`)).status).toBe(200);
      }
    });

    it.skipIf(isPrism)("generated run ids are unique for concurrent creates (defect 7; R4)", async () => {
      const replies = await Promise.all(Array.from({ length: 12 }, () => create({ file: fx.hello })));
      for (const r of replies) expect(r.status).toBe(200);
      const ids = replies.map((r) => r.body.run_id as string);
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of ids) expect(id).toMatch(/^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/);
    });

    it.each([
      ["missing file", {}],
      ["file of the wrong type", { file: 42 }],
      ["empty file", { file: "" }],
      ["file null", { file: null }],
    ])("%s → 400 INVALID_SPEC naming `file`", async (_label, body) => {
      const res = await create(body);
      expect(res.status).toBe(400);
      if (!isPrism) {
        // R3: Prism answers its first 400 example whatever the violation.
        expect(res.body.code).toBe("INVALID_SPEC");
        expect(res.body.message).toMatch(/file/);
      } else {
        expectPrismViolation(res, "file");
      }
      expect(res.body.retryable).toBe(false);
    });

    it.each([
      ["max_parallel_microvms_per_run: 0", { max_parallel_microvms_per_run: 0 }, "max_parallel_microvms_per_run"],
      ["stage_timeout_secs: 0", { stage_timeout_secs: 0 }, "stage_timeout_secs"],
      ["negative max_stage_retries", { max_stage_retries: -1 }, "max_stage_retries"],
      ["negative cancel_grace_period_secs", { cancel_grace_period_secs: -5 }, "cancel_grace_period_secs"],
      ["unknown policy key", { max_parallel_microvms_per_run: 2, turbo: true }, "policy|turbo"],
      ["string instead of int", { stage_timeout_secs: "10" }, "stage_timeout_secs"],
      ["float instead of int", { max_stage_retries: 1.5 }, "max_stage_retries"],
      ["policy not an object", "fast", "policy"],
    ])("bad policy (%s) → 400 INVALID_POLICY naming the field", async (_label, policy, field) => {
      const res = await create({ file: isPrism ? "examples/hello.yaml" : fx.hello, policy });
      expect(res.status).toBe(400);
      if (!isPrism) {
        expect(res.body.code).toBe("INVALID_POLICY"); // R3 on Prism
        expect(res.body.message).toMatch(new RegExp(field));
      } else {
        expectPrismViolation(res, field);
      }
    });

    it.each([
      ["truncated object", '{"file": '],
      ["not JSON at all", "file=hello.yaml"],
      ["trailing garbage", '{"file":"x.yaml"} x'],
      ["single quotes", "{'file':'x.yaml'}"],
    ])("malformed JSON (%s) → 400 INVALID_SPEC (R2 on Prism: status only)", async (_label, raw) => {
      const res = await api.post("/v1/runs", { raw, conformance: "skip-on-prism" });
      expect(res.status).toBe(400);
      if (!isPrism) {
        expect(res.body.code).toBe("INVALID_SPEC");
        expect(res.body.retryable).toBe(false);
      }
    });

    it.each([
      ["an array", "[]"],
      ["a string", '"x.yaml"'],
      ["a number", "42"],
      ["null", "null"],
    ])("valid JSON that is %s → 400 INVALID_SPEC", async (_label, raw) => {
      const res = await api.post("/v1/runs", { raw, conformance: "skip-on-prism" });
      expect(res.status).toBe(400);
      if (!isPrism) expect(res.body.code).toBe("INVALID_SPEC");
    });

    it.each(["a..b", "../etc", ".hidden", "", "a/b", "x".repeat(129)])(
      "run_id %j that is not a safe id → 400 INVALID_SPEC",
      async (runId) => {
        const res = await create({ file: isPrism ? "examples/hello.yaml" : fx.hello, run_id: runId });
        expect(res.status).toBe(400);
        if (!isPrism) {
          expect(res.body.code).toBe("INVALID_SPEC");
          expect(res.body.message).toMatch(/run_id/);
        } else {
          expectPrismViolation(res, "run_id");
        }
      },
    );

    it.skipIf(isPrism)("policy: absent → stored as null; given → stored, missing keys default (R4)", async () => {
      const a = await create({ file: fx.hello });
      const b = await create({ file: fx.hello, policy: { max_stage_retries: 1 } });
      const runA = (await api.get(`/v1/runs/${a.body.run_id}`)).body as RunState;
      const runB = (await api.get(`/v1/runs/${b.body.run_id}`)).body as RunState;
      expect(runA.policy).toBeNull();
      expect(runB.policy).not.toBeNull();
      expect(runB.policy!.max_stage_retries).toBe(1);
      const defaults = { max_parallel_microvms_per_run: 4, stage_timeout_secs: 3600, cancel_grace_period_secs: 30 };
      for (const [k, v] of Object.entries(defaults)) {
        const got = (runB.policy as Record<string, unknown>)[k];
        if (got !== undefined) expect(got, k).toBe(v);
      }
    });
  });

  // ── Section 5: lifecycle (R4: all skipped on Prism) ───────────────────────────────────
  describe.skipIf(isPrism)("run lifecycle (R4)", () => {
    it("a successful workflow: events, exit_code, finished_at, log chunks", async () => {
      const run = await helloRun();
      expect(run.status).toBe("succeeded");
      expect(run.exit_code).toBe(0);
      expect(run.finished_at).toMatch(RFC3339);
      expect(run.error).toBeNull();
      expect(run.active_stage_count).toBe(0);
      expect(run.active_microvm_count).toBe(0);
      if (run.sandbox_mode !== undefined) expect(run.sandbox_mode).toBe("mock");
      expect(run.report).not.toBeNull();
      expect(run.report!.success).toBe(true);
      expect(run.report!.kind).toBe("workflow");
      expect(run.report!.name).toBe("demo");
      expect(run.report!.output).toContain("HELLO");

      const ev = run.events;
      const t = types(ev);
      expect(t.slice(0, 3)).toEqual(["run.started", "env.provisioned", "run.spec.loaded"]);
      expect(ev[0]!.message).toBe(`run created for ${fx.recorded(fx.hello)}`);
      expect(ev[1]!.environment_id).toBe(`env-${run.id}`);
      for (const needed of [
        "workflow.planned",
        "stage.queued",
        "stage.started",
        "stage.completed",
        "run.finished",
        "log.chunk",
        "log.closed",
      ]) {
        expect(t, `events include ${needed}`).toContain(needed);
      }
      expect(t).not.toContain("run.failed");
      expect(t.at(-1)).toBe("log.closed");

      // Stage events per step, with the documented payloads.
      for (const step of ["fetch", "shout"]) {
        const of = (type: string) => ev.filter((e) => e.event_type === type && stageOf(e) === step);
        expect(of("stage.queued"), `stage.queued ${step}`).toHaveLength(1);
        expect(Array.isArray(payload(of("stage.queued")[0]).depends_on)).toBe(true);
        expect(of("stage.started"), `stage.started ${step}`).toHaveLength(1);
        expect(payload(of("stage.started")[0]).stage_attempt).toBe(1);
        const done = of("stage.completed");
        expect(done, `stage.completed ${step}`).toHaveLength(1);
        expect(payload(done[0]).exit_code).toBe(0);
        expect(payload(done[0]).stage_attempt).toBe(1);
        expect(Number.isInteger(payload(done[0]).duration_ms)).toBe(true);
      }
      const queuedShout = ev.find((e) => e.event_type === "stage.queued" && stageOf(e) === "shout");
      expect(payload(queuedShout).depends_on).toEqual(["fetch"]);
      const seqOf = (type: string, step: string) => ev.find((e) => e.event_type === type && stageOf(e) === step)!.seq;
      expect(seqOf("stage.started", "shout")).toBeGreaterThan(seqOf("stage.completed", "fetch"));

      // Output: log.chunk per line after the terminal event, then log.closed.
      const finished = ev.find((e) => e.event_type === "run.finished")!;
      const chunks = ev.filter((e) => e.event_type === "log.chunk");
      expect(chunks.map((c) => String(payload(c).data).replace(/\r?\n$/, ""))).toContain("HELLO");
      for (const c of chunks) {
        expect(c.stream).toBe("stdout");
        expect(c.seq).toBeGreaterThan(finished.seq);
      }
      expect(run.terminal_event_id).toBe(finished.event_id);

      expect(run.stage_states?.fetch).toMatchObject({ status: "succeeded", exit_code: 0 });
      expect(run.stage_states?.shout).toMatchObject({ status: "succeeded", exit_code: 0 });
    });

    it("event envelope: UUID v7 unique ids, gapless seq from 0, attempt_id, RFC 3339, event_type_v2", async () => {
      const run = await helloRun();
      expectEnvelope(run);
      const listed = await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`);
      expect(listed.status).toBe(200);
      expect(listed.body.map((e) => e.event_id)).toEqual(run.events.map((e) => e.event_id));
      expectEnvelope(run, listed.body);
    });

    it("terminal_event_id is the terminal event's id and never changes", async () => {
      const run = await helloRun();
      const again = (await api.get<RunState>(`/v1/runs/${run.id}`)).body;
      expect(again.terminal_event_id).toBe(run.terminal_event_id);
      const terminal = again.events.find((e) => e.event_id === again.terminal_event_id);
      expect(terminal?.event_type).toBe("run.finished");
      // Cancelling a terminal run: 200, same id, nothing appended (section 8).
      const cancel = await api.post(`/v1/runs/${run.id}/cancel`, { json: { reason: "too late" } });
      expect(cancel.status).toBe(200);
      expect(cancel.body).toMatchObject({ run_id: run.id, state: "succeeded", terminal_event_id: run.terminal_event_id });
      const after = (await api.get<RunState>(`/v1/runs/${run.id}`)).body;
      expect(after.events).toHaveLength(again.events.length);
      expect(after.status).toBe("succeeded");
      expect(after.terminal_event_id).toBe(run.terminal_event_id);
    });

    it.each([
      ["missing", (f: Fixtures) => f.missing],
      ["invalid", (f: Fixtures) => f.invalid],
    ])("spec file %s → 200 running, then spec.parse_failed, run.failed, status failed", async (_label, pick) => {
      const file = pick(fx);
      const res = await create({ file });
      expect(res.status).toBe(200);
      expect(res.body.state).toBe("running");
      const run = await waitForTerminal(api, res.body.run_id);
      expect(run.status).toBe("failed");
      expect(typeof run.error).toBe("string");
      expect(run.error!.length).toBeGreaterThan(0);
      const t = types(run.events);
      expect(t.slice(0, 3)).toEqual(["run.started", "env.provisioned", "spec.parse_failed"]);
      expect(t).toContain("run.failed");
      expect(t.indexOf("run.failed")).toBeGreaterThan(t.indexOf("spec.parse_failed"));
      expect(t.filter((x) => x.startsWith("stage.") || x.startsWith("microvm."))).toEqual([]);
      const failed = run.events.find((e) => e.event_type === "run.failed")!;
      expect(run.terminal_event_id).toBe(failed.event_id);
      expect(run.finished_at).toMatch(RFC3339);
      expectEnvelope(run);
    });

    it("plan events of a pipeline: box.started per box, skill.mounted per skill", async () => {
      const res = await create({ file: fx.pipeline });
      expect(res.status).toBe(200);
      const run = await waitForTerminal(api, res.body.run_id);
      const t = types(run.events);
      expect(t.slice(0, 3)).toEqual(["run.started", "env.provisioned", "run.spec.loaded"]);
      const boxes = run.events.filter((e) => e.event_type === "box.started");
      expect(boxes.map((e) => e.box_name).sort()).toEqual(["reviewer", "writer"]);
      const skills = run.events.filter((e) => e.event_type === "skill.mounted");
      expect(skills).toHaveLength(1);
      expect(skills[0]!.box_name ?? stageOf(skills[0]!)).toBe("writer");
      const lastPlan = Math.max(...[...boxes, ...skills].map((e) => e.seq));
      const firstStage = run.events.find((e) => e.event_type.startsWith("stage."));
      if (firstStage) expect(firstStage.seq).toBeGreaterThan(lastPlan);
      expectEnvelope(run);
    });

    it("a failing step (`false`) → run failed, stage.failed exit_code 1, run exit_code 1", async () => {
      const res = await create({ file: fx.fail, policy: { max_stage_retries: 0 } });
      expect(res.status).toBe(200);
      const run = await waitForTerminal(api, res.body.run_id);
      expect(run.status).toBe("failed");
      expect(run.exit_code).toBe(1);
      const failedStage = run.events.filter((e) => e.event_type === "stage.failed" && stageOf(e) === "boom");
      expect(failedStage).toHaveLength(1);
      expect(payload(failedStage[0]).exit_code).toBe(1);
      expect(payload(failedStage[0]).stage_attempt).toBe(1);
      const runFailed = run.events.find((e) => e.event_type === "run.failed");
      expect(runFailed).toBeDefined();
      expect(run.terminal_event_id).toBe(runFailed!.event_id);
      expect(types(run.events)).not.toContain("run.finished");
      expect(run.stage_states?.boom).toMatchObject({ status: "failed", exit_code: 1 });
      expectEnvelope(run);
    });
  });

  // ── Section 5.3: idempotency ───────────────────────────────────────────────────────────
  describe.skipIf(isPrism)("caller run_id idempotency (R4)", () => {
    it("same run_id while active → 200 with the same run, nothing new started", async () => {
      const id = uniqueRunId("idem");
      const first = await create({ file: fx.sleep, run_id: id });
      expect(first.status).toBe(200);
      expect(first.body.run_id).toBe(id);
      longRuns.add(id);
      const second = await create({ file: fx.sleep, run_id: id });
      expect(second.status).toBe(200);
      expect(second.body).toMatchObject({ run_id: id, attempt_id: first.body.attempt_id });
      expect(ACTIVE).toContain(second.body.state);
      // A different file under the same active id still returns the existing run.
      const third = await create({ file: fx.hello, run_id: id });
      expect(third.status).toBe(200);
      expect(third.body.run_id).toBe(id);

      const run = (await api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(run.file).toBe(fx.recorded(fx.sleep));
      expect(types(run.events).filter((t) => t === "run.started")).toHaveLength(1);
      const list = (await api.get<{ runs: RunState[] }>("/v1/runs")).body.runs;
      expect(list.filter((r) => r.id === id)).toHaveLength(1);
    });

    it("concurrent creates with one run_id start exactly one run", async () => {
      const id = uniqueRunId("race");
      longRuns.add(id);
      const replies = await Promise.all(Array.from({ length: 8 }, () => create({ file: fx.sleep, run_id: id })));
      for (const r of replies) {
        expect(r.status).toBe(200);
        expect(r.body.run_id).toBe(id);
      }
      const run = (await api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(types(run.events).filter((t) => t === "run.started")).toHaveLength(1);
      const list = (await api.get<{ runs: RunState[] }>("/v1/runs")).body.runs;
      expect(list.filter((r) => r.id === id)).toHaveLength(1);
    });

    it("same run_id after terminal → 409 ALREADY_TERMINAL", async () => {
      const id = uniqueRunId("done");
      expect((await create({ file: fx.hello, run_id: id })).status).toBe(200);
      await waitForTerminal(api, id);
      const again = await create({ file: fx.hello, run_id: id });
      expect(again.status).toBe(409);
      expect(again.body.code).toBe("ALREADY_TERMINAL");
      expect(again.body.retryable).toBe(false);

      const cancelledId = uniqueRunId("gone");
      await startLongRun(cancelledId);
      expect((await api.post(`/v1/runs/${cancelledId}/cancel`)).status).toBe(200);
      const afterCancel = await create({ file: fx.sleep, run_id: cancelledId });
      expect(afterCancel.status).toBe(409);
      expect(afterCancel.body.code).toBe("ALREADY_TERMINAL");
    });
  });

  // ── Section 6 + defect 1: v2 naming ────────────────────────────────────────────────────
  describe.skipIf(isPrism)("api_version=v2 naming (R4)", () => {
    const expectV2 = (events: RunEvent[], legacy: RunEvent[]) => {
      expect(events.map((e) => e.event_id)).toEqual(legacy.map((e) => e.event_id));
      events.forEach((e, i) => {
        expect(e.event_type).toBe(e.event_type_v2);
        expect(e.event_type).toBe(v2Name(legacy[i]!.event_type));
      });
    };

    it("GET /v1/runs/{id}?api_version=v2 renames every event", async () => {
      const run = await helloRun();
      const v2 = await api.get<RunState>(`/v1/runs/${run.id}`, { query: { api_version: "v2" } });
      expect(v2.status).toBe(200);
      expectV2(v2.body.events, run.events);
      expect(types(v2.body.events)).toContain("RunCompleted");
      expect(types(v2.body.events)).toContain("EnvironmentProvisioned");
    });

    it("GET /v1/runs/{id}/events?api_version=v2 renames every event", async () => {
      const run = await helloRun();
      const v2 = await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: { api_version: "v2" } });
      expect(v2.status).toBe(200);
      expectV2(v2.body, run.events);
    });

    it("GET /v1/runs?api_version=v2 renames events of every listed run (defect 1)", async () => {
      const run = await helloRun();
      const list = await api.get<{ runs: RunState[] }>("/v1/runs", { query: { api_version: "v2" } });
      expect(list.status).toBe(200);
      const mine = list.body.runs.find((r) => r.id === run.id);
      expect(mine).toBeDefined();
      expectV2(mine!.events, run.events);
      for (const r of list.body.runs) for (const e of r.events) expect(e.event_type).toBe(e.event_type_v2);
    });

    it("any other api_version (or none) keeps legacy names", async () => {
      const run = await helloRun();
      for (const q of [{}, { api_version: "v1" }, { api_version: "V2" }, { api_version: "v3" }] as Record<string, string>[]) {
        const got = (await api.get<RunState>(`/v1/runs/${run.id}`, { query: q })).body;
        expect(types(got.events), JSON.stringify(q)).toEqual(types(run.events));
        const ev = (await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: q })).body;
        expect(types(ev), JSON.stringify(q)).toEqual(types(run.events));
      }
      const list = (await api.get<{ runs: RunState[] }>("/v1/runs")).body.runs;
      expect(types(list.find((r) => r.id === run.id)!.events)).toEqual(types(run.events));
    });
  });

  // ── Section 7: events resume ───────────────────────────────────────────────────────────
  describe.skipIf(isPrism)("from_event_id (R4)", () => {
    it("known id → strictly after it; unknown → all; last → []; combined with v2", async () => {
      const run = await helloRun();
      const all = run.events;
      expect(all.length).toBeGreaterThan(4);
      const k = 3;
      const ids = (evs: RunEvent[]) => evs.map((e) => e.event_id);
      const after = await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, {
        query: { from_event_id: all[k]!.event_id },
      });
      expect(after.status).toBe(200);
      expect(ids(after.body)).toEqual(ids(all.slice(k + 1)));
      expect(after.body[0]!.seq).toBe(k + 1);

      for (const unknown of [randomUUID(), "not-an-event-id"]) {
        const res = await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: { from_event_id: unknown } });
        expect(res.status).toBe(200);
        expect(ids(res.body)).toEqual(ids(all));
      }

      const last = await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, {
        query: { from_event_id: all.at(-1)!.event_id },
      });
      expect(last.body).toEqual([]);

      const v2 = await api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, {
        query: { from_event_id: all[k]!.event_id, api_version: "v2" },
      });
      expect(ids(v2.body)).toEqual(ids(all.slice(k + 1)));
      for (const e of v2.body) expect(e.event_type).toBe(e.event_type_v2);
    });
  });

  // ── Section 2: list filter ─────────────────────────────────────────────────────────────
  describe.skipIf(isPrism)("GET /v1/runs?state= (R4)", () => {
    it("active | terminal | anything else (= all)", async () => {
      const done = await helloRun();
      const active = await startLongRun();
      const list = async (state?: string) => {
        const res = await api.get<{ runs: RunState[] }>("/v1/runs", { query: state ? { state } : {} });
        expect(res.status).toBe(200);
        return res.body.runs;
      };
      const act = await list("active");
      expect(act.map((r) => r.id)).toContain(active);
      expect(act.map((r) => r.id)).not.toContain(done.id);
      for (const r of act) expect(isTerminal(r.status), `${r.id} is ${r.status}`).toBe(false);

      const term = await list("terminal");
      expect(term.map((r) => r.id)).toContain(done.id);
      expect(term.map((r) => r.id)).not.toContain(active);
      for (const r of term) expect(isTerminal(r.status), `${r.id} is ${r.status}`).toBe(true);

      for (const s of ["bogus", "", undefined, "ACTIVE"]) {
        const ids = (await list(s)).map((r) => r.id);
        expect(ids, `state=${s}`).toContain(active);
        expect(ids, `state=${s}`).toContain(done.id);
      }
    });
  });

  // ── Section 8 + defect 3: cancel ──────────────────────────────────────────────────────
  describe("POST /v1/runs/{id}/cancel", () => {
    it.skipIf(isPrism)("unknown run → 404 NOT_FOUND (R4)", async () => {
      const res = await api.post("/v1/runs/no-such-run-xyz/cancel", { json: { reason: "x" } });
      expect(res.status).toBe(404);
      expect(res.body.code).toBe("NOT_FOUND");
    });

    it.skipIf(isPrism)("active run → 200 cancelled; terminal_event_id = run.cancelled; repeat is a no-op (R4)", async () => {
      const id = await startLongRun();
      const running = (await api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(running.active_stage_count).toBe(1); // `nap` started and has not finished

      const res = await api.post(`/v1/runs/${id}/cancel`, { json: { reason: "test says stop" } });
      expect(res.status).toBe(200);
      expect(res.body.run_id).toBe(id);
      expect(res.body.state).toBe("cancelled");
      expect(typeof res.body.terminal_event_id).toBe("string");

      // Durable before the reply: the very next read shows it.
      const run = (await api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(run.status).toBe("cancelled");
      expect(run.terminal_reason).toBe("test says stop");
      expect(run.terminal_event_id).toBe(res.body.terminal_event_id);
      expect(run.finished_at).toMatch(RFC3339);
      const cancelled = run.events.find((e) => e.event_type === "run.cancelled");
      expect(cancelled?.event_id).toBe(res.body.terminal_event_id);

      const napFailed = run.events.find((e) => e.event_type === "stage.failed" && stageOf(e) === "nap");
      expect(napFailed, "running stage gets stage.failed").toBeDefined();
      expect(payload(napFailed).exit_code).toBe(-1);
      expect(String(payload(napFailed).error ?? napFailed!.message)).toMatch(/run cancelled/);
      const afterSkipped = run.events.find((e) => e.event_type === "stage.skipped" && stageOf(e) === "after");
      expect(afterSkipped, "queued stage gets stage.skipped").toBeDefined();
      expect(napFailed!.seq).toBeLessThan(cancelled!.seq);
      expect(afterSkipped!.seq).toBeLessThan(cancelled!.seq);
      expectEnvelope(run);

      // Cancel stops the work: live counts drop to zero.
      await waitForRun(api, id, (r) => r.active_stage_count === 0 && r.active_microvm_count === 0, {
        what: "active counts back to 0",
      });

      const again = await api.post(`/v1/runs/${id}/cancel`, { json: { reason: "again" } });
      expect(again.status).toBe(200);
      expect(again.body).toEqual({ run_id: id, state: "cancelled", terminal_event_id: res.body.terminal_event_id });
      const after = (await api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(after.events.map((e) => e.event_id)).toEqual(run.events.map((e) => e.event_id));
      expect(after.terminal_reason).toBe("test says stop");
      expect(after.status).toBe("cancelled");
    });

    it.each([
      ["no content-type", null],
      ["content-type application/json", "application/json"],
    ])("empty body (%s) → 200 cancelled with the default reason", async (_label, contentType) => {
      const id = isPrism ? "build-42" : await startLongRun();
      const res = await api.post(`/v1/runs/${id}/cancel`, { contentType });
      expect(res.status).toBe(200);
      expect(res.body.state).toBe("cancelled");
      if (!isPrism) {
        const run = (await api.get<RunState>(`/v1/runs/${id}`)).body;
        expect(run.terminal_reason).toBe("run marked cancelled");
      }
    });

    it.each([
      ["truncated JSON", '{"reason": '],
      ["plain text", "stop it"],
    ])("malformed non-empty body (%s) → 400 INVALID_SPEC, run untouched (defect 3; R2)", async (_label, raw) => {
      const id = isPrism ? "build-42" : await startLongRun();
      const res = await api.post(`/v1/runs/${id}/cancel`, { raw, conformance: "skip-on-prism" });
      expect(res.status).toBe(400);
      if (!isPrism) {
        expect(res.body.code).toBe("INVALID_SPEC");
        const run = (await api.get<RunState>(`/v1/runs/${id}`)).body;
        expect(ACTIVE).toContain(run.status);
        expect(types(run.events)).not.toContain("run.cancelled");
      }
    });

    it("a body that is JSON but not a CancelRunRequest → 400", async () => {
      const id = isPrism ? "build-42" : await startLongRun();
      const res = await api.post(`/v1/runs/${id}/cancel`, { json: { reason: 42 } });
      expect(res.status).toBe(400);
      if (!isPrism) expect(res.body.code).toBe("INVALID_SPEC");
    });
  });

  // ── Section 9: policy enforcement ──────────────────────────────────────────────────────
  describe.skipIf(isPrism)("policy enforcement (R4)", () => {
    it("stage_timeout_secs: a stage running longer fails, and so does the run", async () => {
      const res = await create({ file: fx.slow, policy: { stage_timeout_secs: 1, max_stage_retries: 0 } });
      const run = await waitForTerminal(api, res.body.run_id);
      expect(run.status).toBe("failed");
      const failed = run.events.find((e) => e.event_type === "stage.failed" && stageOf(e) === "crawl");
      expect(failed).toBeDefined();
      expect(types(run.events)).not.toContain("stage.completed");
    });

    it("max_stage_retries: a failing stage is retried N times, each attempt numbered", async () => {
      const res = await create({ file: fx.fail, policy: { max_stage_retries: 2 } });
      const run = await waitForTerminal(api, res.body.run_id);
      expect(run.status).toBe("failed");
      const attempts = run.events
        .filter((e) => e.event_type === "stage.started" && stageOf(e) === "boom")
        .map((e) => payload(e).stage_attempt);
      expect(attempts).toEqual([1, 2, 3]);
      expect(run.exit_code).toBe(1);
    });

    it("max_parallel_microvms_per_run: 1 → stages never overlap", async () => {
      const res = await create({ file: fx.fanout, policy: { max_parallel_microvms_per_run: 1 } });
      let maxStages = 0;
      let maxVms = 0;
      const run = await waitForRun(
        api,
        res.body.run_id,
        (r) => {
          maxStages = Math.max(maxStages, r.active_stage_count);
          maxVms = Math.max(maxVms, r.active_microvm_count);
          return isTerminal(r.status);
        },
        { what: "terminal state" },
      );
      expect(run.status).toBe("succeeded");
      expect(maxVms).toBeLessThanOrEqual(1);
      expect(maxStages).toBeLessThanOrEqual(1);
      let live = 0;
      let peak = 0;
      for (const e of run.events) {
        if (e.event_type === "stage.started") live += 1;
        if (e.event_type === "stage.completed" || e.event_type === "stage.failed") live -= 1;
        peak = Math.max(peak, live);
      }
      expect(peak).toBe(1);
    });
  });

  // ── Section 2: stages, structured output, artifacts, sessions ──────────────────────────
  describe("stages, output, artifacts, sessions", () => {
    it.skipIf(isPrism)("GET stages lists the planned stages in order (R4)", async () => {
      const run = await helloRun();
      const res = await api.get(`/v1/runs/${run.id}/stages`);
      expect(res.status).toBe(200);
      expect(res.body.run_id).toBe(run.id);
      expect(res.body.attempt_id).toBe(run.attempt_id);
      expect(res.body.stages.map((s: { name: string }) => s.name)).toEqual(["fetch", "shout"]);
      expect(res.body.stages[1]).toMatchObject({ status: "succeeded", exit_code: 0, depends_on: ["fetch"] });
    });

    it.skipIf(isPrism)("unknown run → 404 NOT_FOUND on every run route (R4)", async () => {
      for (const path of [
        "/v1/runs/nope-404",
        "/v1/runs/nope-404/events",
        "/v1/runs/nope-404/stages",
        "/v1/runs/nope-404/stages/main/output-file",
        "/v1/runs/nope-404/stages/main/artifacts/report.txt",
      ]) {
        const res = await api.get(path);
        expect(res.status, path).toBe(404);
        expect(res.body.code, path).toBe("NOT_FOUND");
      }
    });

    it.skipIf(isPrism)("known run without output → 404 STRUCTURED_OUTPUT_MISSING / ARTIFACT_NOT_FOUND (R4)", async () => {
      const run = await helloRun();
      const out = await api.get(`/v1/runs/${run.id}/stages/fetch/output-file`);
      expect(out.status).toBe(404);
      expect(out.body.code).toBe("STRUCTURED_OUTPUT_MISSING");
      const art = await api.get(`/v1/runs/${run.id}/stages/main/artifacts/report.txt`);
      expect(art.status).toBe(404);
      expect(art.body.code).toBe("ARTIFACT_NOT_FOUND");
    });

    it("session messages: append, list, [] for unknown, 400 for a bad message", async () => {
      const sid = `sess-${randomUUID()}`;
      const empty = await api.get(`/v1/sessions/${sid}/messages`);
      expect(empty.status).toBe(200);
      if (!isPrism) expect(empty.body).toEqual([]); // R4: Prism answers its example
      const posted = await api.post(`/v1/sessions/${sid}/messages`, { json: { role: "user", content: "hi there" } });
      expect(posted.status).toBe(200);
      if (!isPrism) {
        expect(posted.body).toMatchObject({ role: "user", content: "hi there" });
        await api.post(`/v1/sessions/${sid}/messages`, { json: { role: "assistant", content: "hello" } });
        const list = await api.get(`/v1/sessions/${sid}/messages`);
        expect(list.body.map((m: { content: string }) => m.content)).toEqual(["hi there", "hello"]);
      }
      const bad = await api.post(`/v1/sessions/${sid}/messages`, { json: { content: "no role" } });
      expect(bad.status).toBe(400);
      if (!isPrism) expect(bad.body.code).toBe("INVALID_SPEC");
    });

    it.runIf(isPrism)("every operation answers its declared example (mock only)", async () => {
      const calls: Array<[string, string, unknown?]> = [
        ["GET", "/v1/health"],
        ["POST", "/v1/runs", { file: "examples/hello.yaml", run_id: "build-42" }],
        ["GET", "/v1/runs"],
        ["GET", "/v1/runs/build-42"],
        ["GET", "/v1/runs/build-42/events"],
        ["POST", "/v1/runs/build-42/cancel", { reason: "superseded" }],
        ["GET", "/v1/runs/build-42/stages"],
        ["GET", "/v1/runs/build-42/stages/main/output-file"],
        ["GET", "/v1/runs/build-42/stages/main/artifacts/report.txt"],
        ["GET", "/v1/sessions/s1/messages"],
        ["POST", "/v1/sessions/s1/messages", { role: "user", content: "hi" }],
      ];
      for (const [method, path, json] of calls) {
        const res: ApiResponse = await api.request(method, path, {
          json,
          headers: { accept: path.includes("/artifacts/") ? "application/octet-stream" : "application/json" },
        });
        expect(res.status, `${method} ${path}`).toBe(200);
        expect(conformanceProblems(method, path, res)).toEqual([]);
      }
    });
  });

  // ── Section 4 + defect 6: unsafe ids ───────────────────────────────────────────────────
  describe("ids used in paths must be safe (defect 6)", () => {
    const BAD = ["..%2F..%2Fetc", "a..b", ".hidden"];
    const routes = (bad: string): Array<[string, string]> => [
      ["GET", `/v1/runs/${bad}`],
      ["GET", `/v1/runs/${bad}/events`],
      ["POST", `/v1/runs/${bad}/cancel`],
      ["GET", `/v1/runs/${bad}/stages`],
      ["GET", `/v1/runs/${bad}/stages/main/output-file`],
      ["GET", `/v1/runs/ok-run/stages/${bad}/output-file`],
      ["GET", `/v1/runs/${bad}/stages/main/artifacts/report.txt`],
      ["GET", `/v1/runs/ok-run/stages/${bad}/artifacts/report.txt`],
      ["GET", `/v1/runs/ok-run/stages/main/artifacts/${bad}`],
      ["GET", `/v1/sessions/${bad}/messages`],
      ["POST", `/v1/sessions/${bad}/messages`],
    ];
    it.each(BAD)("id %j → 400 on every route with an id (R3 on Prism: a declared 4xx)", async (bad) => {
      for (const [method, path] of routes(bad)) {
        const json = path.endsWith("/messages") && method === "POST" ? { role: "user", content: "x" } : undefined;
        const res = await api.request(method, path, { json });
        if (isPrism) {
          expect([400, 422], `${method} ${path}`).toContain(res.status);
        } else {
          expect(res.status, `${method} ${path}`).toBe(400);
          expect(res.body.retryable).toBe(false);
        }
      }
    });
  });

  // ── Section 1: bearer auth on TCP (in-process only: the shared targets run without auth) ─
  it.runIf(factory.kind === "inprocess")("TCP with a token: missing/wrong token → 401 UNAUTHORIZED on every route, health included (in-process only: starts its own daemon)", async () => {
    const { createDaemon } = (await import("../../src/server.js")) as unknown as {
      createDaemon: (o: { stateDir: string; auth: { token: string } }) => Promise<{
        listen(a: string): Promise<{ url: string }>;
        close(): Promise<void>;
      }>;
    };
    const dir = makeStateDir();
    const token = "0123456789abcdef".repeat(4);
    const secured = await createDaemon({ stateDir: dir, auth: { token } });
    try {
      const { url } = await secured.listen("tcp://127.0.0.1:0");
      const client = new ApiClient(url.replace(/\/$/, ""), "inprocess");
      const routes: Array<[string, string, unknown?]> = [
        ["GET", "/v1/health"],
        ["GET", "/v1/runs"],
        ["POST", "/v1/runs", { file: fx.hello }],
        ["GET", "/v1/runs/some-run"],
        ["GET", "/v1/runs/some-run/events"],
        ["POST", "/v1/runs/some-run/cancel"],
        ["GET", "/v1/runs/some-run/stages"],
        ["GET", "/v1/sessions/s1/messages"],
      ];
      for (const [method, path, json] of routes) {
        for (const bad of [null, "wrong-token", token.slice(0, -1), token + "0"]) {
          const res = await client.request(method, path, { json, token: bad });
          expect(res.status, `${method} ${path} with token ${JSON.stringify(bad)}`).toBe(401);
          expect(res.body.code).toBe("UNAUTHORIZED");
        }
      }
      expect((await client.get("/v1/health", { token })).status).toBe(200);
      expect((await client.get("/v1/runs", { token })).status).toBe(200);
    } finally {
      await secured.close();
      const { rmSync } = await import("node:fs");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // ── Defect 2: state dir is a parameter, daemons never share ───────────────────────────
  it.runIf(factory.kind === "inprocess")("two daemons with their own state dirs do not see each other's runs (defect 2; in-process only: starts its own daemon)", async () => {
    const { createDaemon } = (await import("../../src/server.js")) as unknown as {
      createDaemon: (o: { stateDir: string; auth: null }) => Promise<{
        listen(a: string): Promise<{ url: string }>;
        close(): Promise<void>;
      }>;
    };
    const otherDir = makeStateDir();
    const other = await createDaemon({ stateDir: otherDir, auth: null });
    try {
      const { url } = await other.listen("tcp://127.0.0.1:0");
      const otherApi = new ApiClient(url.replace(/\/$/, ""), "inprocess");
      const id = uniqueRunId("iso");
      expect((await otherApi.post("/v1/runs", { json: { file: fx.hello, run_id: id } })).status).toBe(200);
      await waitForTerminal(otherApi, id);
      expect((await api.get(`/v1/runs/${id}`)).status).toBe(404);
      const mine = (await api.get<{ runs: RunState[] }>("/v1/runs")).body.runs.map((r) => r.id);
      expect(mine).not.toContain(id);
    } finally {
      await other.close();
      const { rmSync } = await import("node:fs");
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});

// Sanity of the validator itself (independent of any target): undeclared statuses fail.
describe("openapi validator", () => {
  it("rejects an undeclared status and a non-conforming body", () => {
    expect(validateResponse("getRun", 500, { code: "INTERNAL_ERROR", message: "x", retryable: true })).not.toEqual([]);
    expect(validateResponse("getHealth", 200, { status: "ok" })).not.toEqual([]);
    expect(validateResponse("getHealth", 200, { status: "ok", persistence: "json", accelerator: null })).toEqual([]);
    expect(validateSchema("ApiError", { code: "NOPE", message: "x", retryable: false })).not.toEqual([]);
  });
});
