// Reading runs: v2 naming, resuming events after an id, the list filter, stages, output, artifacts, sessions.
// Part of the HTTP contract suite (see _suite.ts and README.md): run unchanged against the
// in-process server, the daemon as a separate process and the Prism mock.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { conformanceProblems, type ApiResponse, errorOf } from "../../helpers/http.js";
import { isTerminal, types, v2Name } from "../../helpers/runs.js";
import type { RunEvent, RunState } from "../../helpers/types.js";
import { contractSuite } from "./_suite.js";
import type { SessionMessage, StageList, StructuredOutput } from "../../helpers/types.js";

contractSuite("reads", (s) => {
  const { isPrism, startLongRun, helloRun } = s;

  // ── v2 naming ────────────────────────────────────────────────────
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
      const v2 = await s.api.get<RunState>(`/v1/runs/${run.id}`, { query: { api_version: "v2" } });
      expect(v2.status).toBe(200);
      expectV2(v2.body.events, run.events);
      expect(types(v2.body.events)).toContain("RunCompleted");
      expect(types(v2.body.events)).toContain("EnvironmentProvisioned");
    });

    it("GET /v1/runs/{id}/events?api_version=v2 renames every event", async () => {
      const run = await helloRun();
      const v2 = await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: { api_version: "v2" } });
      expect(v2.status).toBe(200);
      expectV2(v2.body, run.events);
    });

    it("GET /v1/runs?api_version=v2 renames events of every listed run", async () => {
      const run = await helloRun();
      const list = await s.api.get<{ runs: RunState[] }>("/v1/runs", { query: { api_version: "v2" } });
      expect(list.status).toBe(200);
      const mine = list.body.runs.find((r) => r.id === run.id);
      expect(mine).toBeDefined();
      expectV2(mine!.events, run.events);
      for (const r of list.body.runs) for (const e of r.events) expect(e.event_type).toBe(e.event_type_v2);
    });

    it("any other api_version (or none) keeps legacy names", async () => {
      const run = await helloRun();
      for (const q of [{}, { api_version: "v1" }, { api_version: "V2" }, { api_version: "v3" }] as Record<string, string>[]) {
        const got = (await s.api.get<RunState>(`/v1/runs/${run.id}`, { query: q })).body;
        expect(types(got.events), JSON.stringify(q)).toEqual(types(run.events));
        const ev = (await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: q })).body;
        expect(types(ev), JSON.stringify(q)).toEqual(types(run.events));
      }
      const list = (await s.api.get<{ runs: RunState[] }>("/v1/runs")).body.runs;
      expect(types(list.find((r) => r.id === run.id)!.events)).toEqual(types(run.events));
    });
  });

  // ── events resume ───────────────────────────────────────────────────────────
  describe.skipIf(isPrism)("from_event_id (R4)", () => {
    it("known id → strictly after it; unknown → all; last → []; combined with v2", async () => {
      const run = await helloRun();
      const all = run.events;
      expect(all.length).toBeGreaterThan(4);
      const k = 3;
      const ids = (evs: RunEvent[]) => evs.map((e) => e.event_id);
      const after = await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, {
        query: { from_event_id: all[k]!.event_id },
      });
      expect(after.status).toBe(200);
      expect(ids(after.body)).toEqual(ids(all.slice(k + 1)));
      expect(after.body[0]!.seq).toBe(k + 1);

      for (const unknown of [randomUUID(), "not-an-event-id"]) {
        const res = await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: { from_event_id: unknown } });
        expect(res.status).toBe(200);
        expect(ids(res.body)).toEqual(ids(all));
      }

      const last = await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, {
        query: { from_event_id: all.at(-1)!.event_id },
      });
      expect(last.body).toEqual([]);

      const v2 = await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, {
        query: { from_event_id: all[k]!.event_id, api_version: "v2" },
      });
      expect(ids(v2.body)).toEqual(ids(all.slice(k + 1)));
      for (const e of v2.body) expect(e.event_type).toBe(e.event_type_v2);
    });
  });

  // ── list filter ─────────────────────────────────────────────────────────────
  describe.skipIf(isPrism)("GET /v1/runs?state= (R4)", () => {
    it("active | terminal | anything else (= all)", async () => {
      const done = await helloRun();
      const active = await startLongRun();
      const list = async (state?: string) => {
        const res = await s.api.get<{ runs: RunState[] }>("/v1/runs", { query: state ? { state } : {} });
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

  // ── stages, structured output, artifacts, sessions ──────────────────────────
  describe("stages, output, artifacts, sessions", () => {
    it.skipIf(isPrism)("GET stages lists the planned stages in order (R4)", async () => {
      const run = await helloRun();
      const res = await s.api.get<StageList>(`/v1/runs/${run.id}/stages`);
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
        const res = await s.api.get(path);
        expect(res.status, path).toBe(404);
        expect(errorOf(res).code, path).toBe("NOT_FOUND");
      }
    });

    it.skipIf(isPrism)("known run without output → 404 STRUCTURED_OUTPUT_MISSING / ARTIFACT_NOT_FOUND (R4)", async () => {
      const run = await helloRun();
      const out = await s.api.get<StructuredOutput>(`/v1/runs/${run.id}/stages/fetch/output-file`);
      expect(out.status).toBe(404);
      expect(errorOf(out).code).toBe("STRUCTURED_OUTPUT_MISSING");
      const art = await s.api.get(`/v1/runs/${run.id}/stages/main/artifacts/report.txt`);
      expect(art.status).toBe(404);
      expect(errorOf(art).code).toBe("ARTIFACT_NOT_FOUND");
    });

    it("session messages: append, list, [] for unknown, 400 for a bad message", async () => {
      const sid = `sess-${randomUUID()}`;
      const empty = await s.api.get<SessionMessage[]>(`/v1/sessions/${sid}/messages`);
      expect(empty.status).toBe(200);
      if (!isPrism) expect(empty.body).toEqual([]); // R4: Prism answers its example
      const posted = await s.api.post<SessionMessage>(`/v1/sessions/${sid}/messages`, { json: { role: "user", content: "hi there" } });
      expect(posted.status).toBe(200);
      if (!isPrism) {
        expect(posted.body).toMatchObject({ role: "user", content: "hi there" });
        await s.api.post<SessionMessage>(`/v1/sessions/${sid}/messages`, { json: { role: "assistant", content: "hello" } });
        const list = await s.api.get<SessionMessage[]>(`/v1/sessions/${sid}/messages`);
        expect(list.body.map((m: { content: string }) => m.content)).toEqual(["hi there", "hello"]);
      }
      const bad = await s.api.post<SessionMessage>(`/v1/sessions/${sid}/messages`, { json: { content: "no role" } });
      expect(bad.status).toBe(400);
      if (!isPrism) expect(errorOf(bad).code).toBe("INVALID_SPEC");
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
        const res: ApiResponse = await s.api.request(method, path, {
          json,
          headers: { accept: path.includes("/artifacts/") ? "application/octet-stream" : "application/json" },
        });
        expect(res.status, `${method} ${path}`).toBe(200);
        expect(conformanceProblems(method, path, res)).toEqual([]);
      }
    });
  });
});
