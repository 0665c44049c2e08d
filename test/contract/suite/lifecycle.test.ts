// The run lifecycle: events and their envelope, failures, plans; cancel; policy enforcement.
// Part of the HTTP contract suite (see _suite.ts and README.md): run unchanged against the
// in-process server, the daemon as a separate process and the Prism mock.
import { describe, expect, it } from "vitest";
import { errorOf } from "../../helpers/http.js";
import { ACTIVE, contractSuite, expectEnvelope, payload, stageOf } from "./_suite.js";
import { RFC3339, isTerminal, types, waitForRun, waitForTerminal, type Fixtures } from "../../helpers/runs.js";
import type { RunEvent, RunState } from "../../helpers/types.js";
import type { CancelRunResponse } from "../../helpers/types.js";

contractSuite("lifecycle", (s) => {
  const { isPrism, create, startLongRun, helloRun } = s;

  // ── lifecycle (R4: all skipped on Prism) ───────────────────────────────────
  describe.skipIf(isPrism)("run lifecycle (R4)", () => {
    it("a successful workflow: events, exit_code, finished_at, log chunks", async () => {
      const run = await helloRun();
      expect(run.status).toBe("succeeded");
      expect(run.exit_code).toBe(0);
      expect(run.finished_at).toMatch(RFC3339);
      expect(run.error).toBeNull();
      expect(run.active_stage_count).toBe(0);
      expect(run.active_microvm_count).toBe(0);
      expect(run.sandbox_mode).toBe("mock"); // the fixture asks for mode: mock
      expect(run.report).not.toBeNull();
      expect(run.report!.success).toBe(true);
      expect(run.report!.kind).toBe("workflow");
      expect(run.report!.name).toBe("demo");
      expect(run.report!.output).toContain("HELLO");

      const ev = run.events;
      const t = types(ev);
      expect(t.slice(0, 3)).toEqual(["run.started", "env.provisioned", "run.spec.loaded"]);
      expect(ev[0]!.message).toBe(`run created for ${s.fx.recorded(s.fx.hello)}`);
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
      const listed = await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`);
      expect(listed.status).toBe(200);
      expect(listed.body.map((e) => e.event_id)).toEqual(run.events.map((e) => e.event_id));
      expectEnvelope(run, listed.body);
    });

    it("terminal_event_id is the terminal event's id and never changes", async () => {
      const run = await helloRun();
      const again = (await s.api.get<RunState>(`/v1/runs/${run.id}`)).body;
      expect(again.terminal_event_id).toBe(run.terminal_event_id);
      const terminal = again.events.find((e) => e.event_id === again.terminal_event_id);
      expect(terminal?.event_type).toBe("run.finished");
      // Cancelling a terminal run: 200, same id, nothing appended.
      const cancel = await s.api.post<CancelRunResponse>(`/v1/runs/${run.id}/cancel`, { json: { reason: "too late" } });
      expect(cancel.status).toBe(200);
      expect(cancel.body).toMatchObject({ run_id: run.id, state: "succeeded", terminal_event_id: run.terminal_event_id });
      const after = (await s.api.get<RunState>(`/v1/runs/${run.id}`)).body;
      expect(after.events).toHaveLength(again.events.length);
      expect(after.status).toBe("succeeded");
      expect(after.terminal_event_id).toBe(run.terminal_event_id);
    });

    it.each([
      ["missing", (f: Fixtures) => f.missing],
      ["invalid", (f: Fixtures) => f.invalid],
    ])("spec file %s → 200 running, then spec.parse_failed, run.failed, status failed", async (_label, pick) => {
      const file = pick(s.fx);
      const res = await create({ file });
      expect(res.status).toBe(200);
      expect(res.body.state).toBe("running");
      const run = await waitForTerminal(s.api, res.body.run_id);
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
      const res = await create({ file: s.fx.pipeline });
      expect(res.status).toBe(200);
      const run = await waitForTerminal(s.api, res.body.run_id);
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
      const res = await create({ file: s.fx.fail, policy: { max_stage_retries: 0 } });
      expect(res.status).toBe(200);
      const run = await waitForTerminal(s.api, res.body.run_id);
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

  // ── cancel ──────────────────────────────────────────────────────
  describe("POST /v1/runs/{id}/cancel", () => {
    it.skipIf(isPrism)("unknown run → 404 NOT_FOUND (R4)", async () => {
      const res = await s.api.post<CancelRunResponse>("/v1/runs/no-such-run-xyz/cancel", { json: { reason: "x" } });
      expect(res.status).toBe(404);
      expect(errorOf(res).code).toBe("NOT_FOUND");
    });

    it.skipIf(isPrism)("active run → 200 cancelled; terminal_event_id = run.cancelled; repeat is a no-op (R4)", async () => {
      const id = await startLongRun();
      const running = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(running.active_stage_count).toBe(1); // `nap` started and has not finished

      const res = await s.api.post<CancelRunResponse>(`/v1/runs/${id}/cancel`, { json: { reason: "test says stop" } });
      expect(res.status).toBe(200);
      expect(res.body.run_id).toBe(id);
      expect(res.body.state).toBe("cancelled");
      expect(typeof res.body.terminal_event_id).toBe("string");

      // Durable before the reply: the very next read shows it.
      const run = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
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
      await waitForRun(s.api, id, (r) => r.active_stage_count === 0 && r.active_microvm_count === 0, {
        what: "active counts back to 0",
      });

      const again = await s.api.post<CancelRunResponse>(`/v1/runs/${id}/cancel`, { json: { reason: "again" } });
      expect(again.status).toBe(200);
      expect(again.body).toEqual({ run_id: id, state: "cancelled", terminal_event_id: res.body.terminal_event_id });
      const after = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
      expect(after.events.map((e) => e.event_id)).toEqual(run.events.map((e) => e.event_id));
      expect(after.terminal_reason).toBe("test says stop");
      expect(after.status).toBe("cancelled");
    });

    it.each([
      ["no content-type", null],
      ["content-type application/json", "application/json"],
    ])("empty body (%s) → 200 cancelled with the default reason", async (_label, contentType) => {
      const id = isPrism ? "build-42" : await startLongRun();
      const res = await s.api.post<CancelRunResponse>(`/v1/runs/${id}/cancel`, { contentType });
      expect(res.status).toBe(200);
      expect(res.body.state).toBe("cancelled");
      if (!isPrism) {
        const run = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
        expect(run.terminal_reason).toBe("run marked cancelled");
      }
    });

    it.each([
      ["truncated JSON", '{"reason": '],
      ["plain text", "stop it"],
    ])("malformed non-empty body (%s) → 400 INVALID_SPEC, run untouched (R2)", async (_label, raw) => {
      const id = isPrism ? "build-42" : await startLongRun();
      const res = await s.api.post<CancelRunResponse>(`/v1/runs/${id}/cancel`, { raw, conformance: "skip-on-prism" });
      expect(res.status).toBe(400);
      if (!isPrism) {
        expect(errorOf(res).code).toBe("INVALID_SPEC");
        const run = (await s.api.get<RunState>(`/v1/runs/${id}`)).body;
        expect(ACTIVE).toContain(run.status);
        expect(types(run.events)).not.toContain("run.cancelled");
      }
    });

    it("a body that is JSON but not a CancelRunRequest → 400", async () => {
      const id = isPrism ? "build-42" : await startLongRun();
      const res = await s.api.post<CancelRunResponse>(`/v1/runs/${id}/cancel`, { json: { reason: 42 } });
      expect(res.status).toBe(400);
      if (!isPrism) expect(errorOf(res).code).toBe("INVALID_SPEC");
    });
  });

  // ── policy enforcement ──────────────────────────────────────────────────────
  describe.skipIf(isPrism)("policy enforcement (R4)", () => {
    it("stage_timeout_secs: a stage running longer fails, and so does the run", async () => {
      const res = await create({ file: s.fx.slow, policy: { stage_timeout_secs: 1, max_stage_retries: 0 } });
      const run = await waitForTerminal(s.api, res.body.run_id);
      expect(run.status).toBe("failed");
      const failed = run.events.find((e) => e.event_type === "stage.failed" && stageOf(e) === "crawl");
      expect(failed).toBeDefined();
      expect(types(run.events)).not.toContain("stage.completed");
    });

    it("max_stage_retries: a failing stage is retried N times, each attempt numbered", async () => {
      const res = await create({ file: s.fx.fail, policy: { max_stage_retries: 2 } });
      const run = await waitForTerminal(s.api, res.body.run_id);
      expect(run.status).toBe("failed");
      const attempts = run.events
        .filter((e) => e.event_type === "stage.started" && stageOf(e) === "boom")
        .map((e) => payload(e).stage_attempt);
      expect(attempts).toEqual([1, 2, 3]);
      expect(run.exit_code).toBe(1);
    });

    it("max_parallel_microvms_per_run: 1 → stages never overlap", async () => {
      const res = await create({ file: s.fx.fanout, policy: { max_parallel_microvms_per_run: 1 } });
      let maxStages = 0;
      let maxVms = 0;
      const run = await waitForRun(
        s.api,
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
});
