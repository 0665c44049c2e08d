// POST /v1/runs: validation of the body, the policy and run_id; caller run_id idempotency; unsafe ids in paths.
// Part of the HTTP contract suite (see _suite.ts and README.md): run unchanged against the
// in-process server, the daemon as a separate process and the Prism mock.
import { describe, expect, it } from "vitest";
import { errorOf } from "../../helpers/http.js";
import { ACTIVE, contractSuite, expectPrismViolation } from "./_suite.js";
import { types, uniqueRunId, waitForTerminal } from "../../helpers/runs.js";
import type { RunState } from "../../helpers/types.js";
import type { CancelRunResponse, CreateRunResponse } from "../../helpers/types.js";

contractSuite("create", (s) => {
  const { isPrism, create, startLongRun, longRuns } = s;

  // ── POST /v1/runs validation ──────────────────────────────────────────────
  describe("POST /v1/runs", () => {
    it("creates a run → 200 {run_id, attempt_id, state}", async () => {
      const res = await create({ file: isPrism ? "examples/hello.yaml" : s.fx.hello });
      expect(res.status).toBe(200);
      expect(typeof res.body.run_id).toBe("string");
      expect(res.body.run_id.length).toBeGreaterThan(0);
      expect(Number.isInteger(res.body.attempt_id)).toBe(true);
      if (!isPrism) {
        expect(res.body.attempt_id).toBe(1);
        expect(ACTIVE).toContain(res.body.state);
        expect((await s.api.get<RunState>(`/v1/runs/${res.body.run_id}`)).status).toBe(200);
      }
    });

    it.skipIf(isPrism)("generated run ids are unique for concurrent creates (R4)", async () => {
      const replies = await Promise.all(Array.from({ length: 12 }, () => create({ file: s.fx.hello })));
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
        expect(errorOf(res).code).toBe("INVALID_SPEC");
        expect(errorOf(res).message).toMatch(/file/);
      } else {
        expectPrismViolation(res, "file");
      }
      expect(errorOf(res).retryable).toBe(false);
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
      const res = await create({ file: isPrism ? "examples/hello.yaml" : s.fx.hello, policy });
      expect(res.status).toBe(400);
      if (!isPrism) {
        expect(errorOf(res).code).toBe("INVALID_POLICY"); // R3 on Prism
        expect(errorOf(res).message).toMatch(new RegExp(field));
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
      const res = await s.api.post<CreateRunResponse>("/v1/runs", { raw, conformance: "skip-on-prism" });
      expect(res.status).toBe(400);
      if (!isPrism) {
        expect(errorOf(res).code).toBe("INVALID_SPEC");
        expect(errorOf(res).retryable).toBe(false);
      }
    });

    it.each([
      ["an array", "[]"],
      ["a string", '"x.yaml"'],
      ["a number", "42"],
      ["null", "null"],
    ])("valid JSON that is %s → 400 INVALID_SPEC", async (_label, raw) => {
      const res = await s.api.post<CreateRunResponse>("/v1/runs", { raw, conformance: "skip-on-prism" });
      expect(res.status).toBe(400);
      if (!isPrism) expect(errorOf(res).code).toBe("INVALID_SPEC");
    });

    it.each(["a..b", "../etc", ".hidden", "", "a/b", "x".repeat(129)])(
      "run_id %j that is not a safe id → 400 INVALID_SPEC",
      async (runId) => {
        const res = await create({ file: isPrism ? "examples/hello.yaml" : s.fx.hello, run_id: runId });
        expect(res.status).toBe(400);
        if (!isPrism) {
          expect(errorOf(res).code).toBe("INVALID_SPEC");
          expect(errorOf(res).message).toMatch(/run_id/);
        } else {
          expectPrismViolation(res, "run_id");
        }
      },
    );

    it.skipIf(isPrism)("policy: absent → stored as null; given → stored, missing keys default (R4)", async () => {
      const a = await create({ file: s.fx.hello });
      const b = await create({ file: s.fx.hello, policy: { max_stage_retries: 1 } });
      const runA = (await s.api.get<RunState>(`/v1/runs/${a.body.run_id}`)).body as RunState;
      const runB = (await s.api.get<RunState>(`/v1/runs/${b.body.run_id}`)).body as RunState;
      expect(runA.policy).toBeNull();
      expect(runB.policy).not.toBeNull();
      expect(runB.policy!.max_stage_retries).toBe(1);
      const defaults = { max_parallel_microvms_per_run: 4, stage_timeout_secs: 3600, cancel_grace_period_secs: 30 };
      // Every key is stored: the given one, the others at their defaults (openapi.yaml's RunPolicy).
      expect(runB.policy).toEqual({ ...defaults, max_stage_retries: 1 });
    });
  });

  // ── idempotency ───────────────────────────────────────────────────────────
  describe.skipIf(isPrism)("caller run_id idempotency (R4)", () => {
    it("same run_id while active → 200 with the same run, nothing new started", async () => {
      const id = uniqueRunId("idem");
      const first = await create({ file: s.fx.sleep, run_id: id });
      expect(first.status).toBe(200);
      expect(first.body.run_id).toBe(id);
      longRuns.add(id);
      const second = await create({ file: s.fx.sleep, run_id: id });
      expect(second.status).toBe(200);
      expect(second.body).toMatchObject({ run_id: id, attempt_id: first.body.attempt_id });
      expect(ACTIVE).toContain(second.body.state);
      // A different file under the same active id still returns the existing run.
      const third = await create({ file: s.fx.hello, run_id: id });
      expect(third.status).toBe(200);
      expect(third.body.run_id).toBe(id);

      const run = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(run.file).toBe(s.fx.recorded(s.fx.sleep));
      expect(types(run.events).filter((t) => t === "run.started")).toHaveLength(1);
      const list = (await s.api.get<{ runs: RunState[] }>("/v1/runs")).body.runs;
      expect(list.filter((r) => r.id === id)).toHaveLength(1);
    });

    it("concurrent creates with one run_id start exactly one run", async () => {
      const id = uniqueRunId("race");
      longRuns.add(id);
      const replies = await Promise.all(Array.from({ length: 8 }, () => create({ file: s.fx.sleep, run_id: id })));
      for (const r of replies) {
        expect(r.status).toBe(200);
        expect(r.body.run_id).toBe(id);
      }
      const run = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(types(run.events).filter((t) => t === "run.started")).toHaveLength(1);
      const list = (await s.api.get<{ runs: RunState[] }>("/v1/runs")).body.runs;
      expect(list.filter((r) => r.id === id)).toHaveLength(1);
    });

    it("same run_id after terminal → 409 ALREADY_TERMINAL", async () => {
      const id = uniqueRunId("done");
      expect((await create({ file: s.fx.hello, run_id: id })).status).toBe(200);
      await waitForTerminal(s.api, id);
      const again = await create({ file: s.fx.hello, run_id: id });
      expect(again.status).toBe(409);
      expect(errorOf(again).code).toBe("ALREADY_TERMINAL");
      expect(errorOf(again).retryable).toBe(false);

      const cancelledId = uniqueRunId("gone");
      await startLongRun(cancelledId);
      expect((await s.api.post<CancelRunResponse>(`/v1/runs/${cancelledId}/cancel`)).status).toBe(200);
      const afterCancel = await create({ file: s.fx.sleep, run_id: cancelledId });
      expect(afterCancel.status).toBe(409);
      expect(errorOf(afterCancel).code).toBe("ALREADY_TERMINAL");
    });
  });

  // ── unsafe ids ───────────────────────────────────────────────────
  describe("ids used in paths must be safe", () => {
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
        const res = await s.api.request(method, path, { json });
        if (isPrism) {
          expect([400, 422], `${method} ${path}`).toContain(res.status);
        } else {
          expect(res.status, `${method} ${path}`).toBe(400);
          expect(errorOf(res).retryable).toBe(false);
        }
      }
    });
  });
});
