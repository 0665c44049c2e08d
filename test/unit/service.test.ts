import { describe, it, expect } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { validateResponse } from "../helpers/openapi.js";
import { daemonsOfFile, startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { errorOf, request } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { assertGapless, createRun, waitForEvent, waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";
import type { CancelRunResponse, CreateRunResponse, RunList } from "../helpers/types.js";

const daemon = daemonsOfFile();

const specDir = tmpDir("vbx-specs-");
const SLEEPY = writeSpec(specDir, workflow("sleepy", [
  { name: "nap", run: { program: "sleep", args: ["300"] } },
  { name: "after", depends_on: ["nap"], run: { program: "echo", args: ["late"] } },
]));
const HELLO = writeSpec(specDir, workflow("hello", [
  { name: "fetch", run: { program: "echo", args: ["hello"] } },
  { name: "shout", depends_on: ["fetch"], run: { program: "tr", args: ["a-z", "A-Z"] } },
]));

/** The engine of every run has wound down (no execution left). */
function idle(t: TestDaemon): boolean {
  return t.d.service.executingCount() === 0;
}

describe("create", () => {
  it("a simple run succeeds with the contract's event sequence", async () => {
    const t = await daemon();
    const id = await createRun(t.url, HELLO);
    const st = await waitForTerminal(t.url, id);
    expect(st.status).toBe("succeeded");
    expect(st.exit_code).toBe(0);
    expect(st.report).toMatchObject({ name: "hello", kind: "workflow", success: true, output: "HELLO\n" });
    const types = st.events.map((e) => e.event_type);
    expect(types.slice(0, 3)).toEqual(["run.started", "env.provisioned", "run.spec.loaded"]);
    expect(st.events[0].message).toBe(`run created for ${HELLO}`);
    expect(st.events[1].environment_id).toBe(`env-${id}`);
    expect(types).toContain("workflow.planned");
    const fin = st.events.findIndex((e) => e.event_type === "run.finished");
    expect(st.events[fin].event_id).toBe(st.terminal_event_id);
    expect(types.slice(fin + 1)).toEqual(["log.chunk", "log.closed"]);
    expect(st.events[fin + 1]).toMatchObject({ stream: "stdout", payload: { data: "HELLO" } });
    assertGapless(st.events);
    expect(new Set(st.events.map((e) => e.event_id)).size).toBe(st.events.length);
    expect(st.active_stage_count).toBe(0);
    expect(st.active_microvm_count).toBe(0);
  });

  it("a missing spec file still answers 200 running, then fails with spec.parse_failed", async () => {
    const t = await daemon();
    const r = await sdk(t.url).api.POST("/v1/runs", { body: { file: path.join(specDir, "nope.json") } });
    expect(r.response.status).toBe(200);
    expect(r.data!.state).toBe("running");
    const st = await waitForTerminal(t.url, r.data!.run_id);
    expect(st.status).toBe("failed");
    const types = st.events.map((e) => e.event_type);
    expect(types).toEqual(["run.started", "env.provisioned", "spec.parse_failed", "run.failed"]);
    expect(st.error).toMatch(/nope\.json/);
  });

  it("50 concurrent creates with one run_id start exactly one run", async () => {
    const t = await daemon();
    const c = sdk(t.url);
    const replies = await Promise.all(Array.from({ length: 50 }, () => c.api.POST("/v1/runs", { body: { file: SLEEPY, run_id: "same-id" } })));
    for (const r of replies) {
      expect(r.response.status).toBe(200);
      expect(r.data!.run_id).toBe("same-id");
      expect(r.data!.attempt_id).toBe(replies[0].data!.attempt_id);
    }
    const list = await c.listRuns();
    expect(list.map((r) => r.id)).toEqual(["same-id"]);
    const st = await c.getRun("same-id");
    expect(st.events.filter((e) => e.event_type === "run.started")).toHaveLength(1);
    await c.api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: "same-id" } } });
    const again = await c.api.POST("/v1/runs", { body: { file: SLEEPY, run_id: "same-id" } });
    expect(again.response.status).toBe(409);
    expect(again.error).toMatchObject({ code: "ALREADY_TERMINAL", retryable: false });
  });

  it("200 creates in the same millisecond get 200 distinct ids", async () => {
    const t = await daemon(tmpDir(), { now: () => 1_767_225_600_000 });
    const c = sdk(t.url);
    const replies = await Promise.all(Array.from({ length: 200 }, () => c.api.POST("/v1/runs", { body: { file: HELLO } })));
    expect(replies.every((r) => r.response.status === 200)).toBe(true);
    const ids = new Set(replies.map((r) => r.data!.run_id));
    expect(ids.size).toBe(200);
    const list = await c.listRuns();
    expect(new Set(list.map((r) => r.id))).toEqual(ids);
    await waitFor(() => idle(t), "all runs to finish", 60_000);
  }, 90_000);
});

describe("policy, listing and events", () => {
  it("an absent policy is null; missing keys take defaults; invalid values are INVALID_POLICY naming the field", async () => {
    const t = await daemon();
    const a = await createRun(t.url, HELLO);
    expect((await sdk(t.url).getRun(a)).policy).toBeNull();
    const b = await createRun(t.url, HELLO, { policy: { max_stage_retries: 0 } });
    expect((await sdk(t.url).getRun(b)).policy).toEqual({
      max_parallel_microvms_per_run: 4,
      max_stage_retries: 0,
      stage_timeout_secs: 3600,
      cancel_grace_period_secs: 30,
    });
    for (const [field, value] of [["max_parallel_microvms_per_run", 0], ["stage_timeout_secs", 0], ["max_stage_retries", -1], ["cancel_grace_period_secs", -1]] as const) {
      const r = await sdk(t.url).api.POST("/v1/runs", { body: { file: HELLO, policy: { [field]: value } } });
      expect(r.response.status, field).toBe(400);
      expect(errorOf(r).code, field).toBe("INVALID_POLICY");
      expect(errorOf(r).message, field).toContain(field);
    }
    await waitForTerminal(t.url, a);
    await waitForTerminal(t.url, b);
  });

  it("GET /runs honours state= and api_version=v2; events resume after from_event_id", async () => {
    const t = await daemon();
    const done = await createRun(t.url, HELLO);
    const st = await waitForTerminal(t.url, done);
    const active = await createRun(t.url, SLEEPY);
    // The unknown state value and parameter are the daemon's to ignore: sent as they are.
    const ids = async (q: string) => (await request<RunList>(t.url, `/v1/runs${q}`)).json.runs.map((r) => r.id);
    expect(await ids("?state=active")).toEqual([active]);
    expect(await ids("?state=terminal")).toEqual([done]);
    expect((await ids("?state=bogus&extra=1")).sort()).toEqual([done, active].sort());
    const [v2] = await sdk(t.url).listRuns({ apiVersion: "v2", state: "terminal" });
    expect(v2.events.map((e) => e.event_type)).toEqual(st.events.map((e) => e.event_type_v2));
    expect(v2.events[0].event_type).toBe("RunStarted");
    const third = st.events[2].event_id;
    const rest = await sdk(t.url).listEvents(done, { fromEventId: third });
    expect(rest.map((e) => e.seq)).toEqual(st.events.slice(3).map((e) => e.seq));
    const restV2 = await sdk(t.url).listEvents(done, { fromEventId: third, apiVersion: "v2" });
    expect(restV2.map((e) => e.event_type)).toEqual(st.events.slice(3).map((e) => e.event_type_v2));
    const all = await sdk(t.url).listEvents(done, { fromEventId: "unknown" });
    expect(all).toHaveLength(st.events.length);
    await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: active } } });
  });
});

describe("sandbox modes", () => {
  it("auto falls back to mock and records it; local without micro-VMs fails with a clear error", async () => {
    const t = await daemon();
    const auto = writeSpec(specDir, { ...workflow("auto", [{ name: "a", run: { program: "echo", args: ["x"] } }, { name: "b", depends_on: ["a"], run: { program: "cat" } }]), sandbox: { mode: "auto" } });
    const st = await waitForTerminal(t.url, await createRun(t.url, auto));
    expect(st.status).toBe("succeeded");
    const sel = st.events.find((e) => e.event_type === "sandbox.selected");
    expect(sel!.payload).toEqual({ requested: "auto", selected: "mock" });
    const local = writeSpec(specDir, { ...workflow("local", [{ name: "a", run: { program: "echo", args: ["x"] } }]), sandbox: { mode: "local" } });
    const st2 = await waitForTerminal(t.url, await createRun(t.url, local));
    expect(st2.status).toBe("failed");
    expect(st2.error).toMatch(/local/);
    expect(st2.events.some((e) => e.event_type === "stage.started")).toBe(false);
  });
});

describe("cancel and the terminal guard", () => {
  it("cancel is final: late stage events are dropped and repeated cancels change nothing", async () => {
    const t = await daemon();
    const id = await createRun(t.url, SLEEPY, { policy: { cancel_grace_period_secs: 0 } });
    await waitForEvent(t.url, id, (e) => e.event_type === "stage.started" && e.stage_name === "nap", "nap to start");
    const c = await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } }, body: { reason: "user asked" } });
    expect(c.response.status).toBe(200);
    expect(c.data!.state).toBe("cancelled");
    const st1 = await sdk(t.url).getRun(id);
    expect(st1.status).toBe("cancelled");
    expect(st1.terminal_reason).toBe("user asked");
    expect(st1.terminal_event_id).toBe(c.data!.terminal_event_id);
    const last = st1.events[st1.events.length - 1];
    expect(last.event_type).toBe("run.cancelled");
    expect(last.event_id).toBe(c.data!.terminal_event_id);
    const nap = st1.events.find((e) => e.event_type === "stage.failed" && e.stage_name === "nap");
    expect(nap!.payload).toMatchObject({ exit_code: -1, error: "run cancelled" });
    expect(st1.events.find((e) => e.event_type === "stage.skipped" && e.stage_name === "after")).toBeTruthy();

    await waitFor(() => idle(t), "the engine to wind down");
    const st2 = await sdk(t.url).getRun(id);
    expect(st2.events.length).toBe(st1.events.length);
    expect(st2.status).toBe("cancelled");
    expect(st2.finished_at).toBe(st1.finished_at);
    expect(st2.stage_states).toEqual(st1.stage_states);
    expect(st2.active_stage_count).toBe(0);
    expect(st2.active_microvm_count).toBe(0);
    assertGapless(st2.events);

    const c2 = await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } }, body: { reason: "again" } });
    expect(c2.response.status).toBe(200);
    expect(c2.data).toEqual({ run_id: id, state: "cancelled", terminal_event_id: c.data!.terminal_event_id });
    const st3 = await sdk(t.url).getRun(id);
    expect(st3.events.length).toBe(st1.events.length);
    expect(st3.terminal_reason).toBe("user asked");

    // durable: the events log on disk matches
    const lines = fs.readFileSync(path.join(t.stateDir, "runs", id, "events.jsonl"), "utf8").trim().split("\n");
    expect(lines.length).toBe(st1.events.length);
    expect(JSON.parse(fs.readFileSync(path.join(t.stateDir, "runs", id, "run.json"), "utf8")).status).toBe("cancelled");
  });

  it("a cancel right after create (before the spec is loaded) runs nothing", async () => {
    const t = await daemon();
    const id = await createRun(t.url, SLEEPY);
    const c = await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } } });
    expect(c.data!.state).toBe("cancelled");
    await waitFor(() => idle(t), "the engine to wind down");
    const st = await sdk(t.url).getRun(id);
    expect(st.status).toBe("cancelled");
    expect(st.events[st.events.length - 1].event_id).toBe(c.data!.terminal_event_id);
    expect(st.events.some((e) => e.event_type === "stage.started")).toBe(false);
    assertGapless(st.events);
  });

  it("unsafe run ids are rejected with 400, never joined into a path", async () => {
    const t = await daemon();
    for (const run_id of ["../escape", "a/b", "..", ".hidden", "x".repeat(129)]) {
      const r = await request<CreateRunResponse>(t.url, "/v1/runs", { method: "POST", body: { file: HELLO, run_id } });
      expect(r.status, run_id).toBe(400);
      expect(errorOf(r).code, run_id).toBe("INVALID_SPEC");
    }
    expect(fs.readdirSync(path.join(t.stateDir, "runs"))).toEqual([]);
  });

  it("cancel without a reason uses the default; a malformed body is 400 INVALID_SPEC; unknown run 404", async () => {
    const t = await daemon();
    const id = await createRun(t.url, SLEEPY);
    const bad = await request<CancelRunResponse>(t.url, `/v1/runs/${id}/cancel`, { method: "POST", body: "{not json", raw: true, contentType: "application/json" });
    expect(bad.status).toBe(400);
    expect(errorOf(bad).code).toBe("INVALID_SPEC");
    expect((await sdk(t.url).getRun(id)).status).toBe("running");
    const c = await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } } });
    expect(c.response.status).toBe(200);
    expect((await sdk(t.url).getRun(id)).terminal_reason).toBe("run marked cancelled");
    const unknown = await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: "ghost" } } });
    expect(unknown.response.status).toBe(404);
    expect(errorOf(unknown).code).toBe("NOT_FOUND");
  });
});

describe("persistence", () => {
  it("a run active when the daemon died fails with daemon_restarted on the next start", async () => {
    const a = await daemon();
    const id = await createRun(a.url, SLEEPY, { run_id: "victim" });
    await waitForEvent(a.url, id, (e) => e.event_type === "stage.started", "nap to start");
    const copy = tmpDir();
    fs.cpSync(a.stateDir, copy, { recursive: true }); // the state as a killed daemon left it
    const b = await daemon(copy);
    const st = await sdk(b.url).getRun("victim");
    expect(st.status).toBe("failed");
    expect(st.terminal_reason).toBe("daemon_restarted");
    expect(st.finished_at).toBeTruthy();
    const last = st.events[st.events.length - 1];
    expect(last.event_type).toBe("run.failed");
    expect(last.event_id).toBe(st.terminal_event_id);
    assertGapless(st.events);
    expect(st.events.find((e) => e.event_type === "stage.failed" && e.stage_name === "nap")).toBeTruthy();
    expect(st.active_stage_count).toBe(0);
    const again = await sdk(b.url).api.POST("/v1/runs", { body: { file: SLEEPY, run_id: "victim" } });
    expect(again.response.status).toBe(409);
    expect(errorOf(again).code).toBe("ALREADY_TERMINAL");
    // the original daemon is unaffected
    expect((await sdk(a.url).getRun("victim")).status).toBe("running");
  });

  describe("loading a hand-made state dir", () => {
    const state = tmpDir();
    let goodEvents = 0;
    let goodId = "";
    const rustEvents = [
      { seq: 0, event_type: "run.started", event_type_v2: "RunStarted", message: "run created for /x.yaml" },
      { seq: 1, event_type: "run.finished", event_type_v2: "RunCompleted", message: "done" },
    ].map((e, i) => ({
      ts_ms: 1_700_000_000_000 + i,
      level: "info",
      run_id: "rust-1",
      event_id: `0190a000-0000-7000-8000-00000000000${i}`,
      attempt_id: 1,
      timestamp: new Date(1_700_000_000_000 + i).toISOString(),
      payload: null,
      ...e,
    }));

    it("prepares: one good run, then a torn events line, a corrupt run.json and a Rust run file", async () => {
      const t = await startDaemon(state);
      goodId = await createRun(t.url, HELLO, { run_id: "good" });
      goodEvents = (await waitForTerminal(t.url, goodId)).events.length;
      await waitFor(() => idle(t), "engine idle");
      await t.d.close();
      fs.appendFileSync(path.join(state, "runs", "good", "events.jsonl"), '{"ts_ms":17000000,"level":"in');
      fs.mkdirSync(path.join(state, "runs", "broken"));
      fs.writeFileSync(path.join(state, "runs", "broken", "run.json"), "{ this is not json");
      fs.writeFileSync(
        path.join(state, "runs", "rust-1.json"),
        JSON.stringify({
          id: "rust-1",
          status: "completed",
          file: "/x.yaml",
          report: { name: "x", kind: "workflow", success: true, output: "ok", stages: 1, total_cost_usd: 0, input_tokens: 0, output_tokens: 0 },
          error: null,
          events: rustEvents,
          attempt_id: 1,
          started_at: rustEvents[0].timestamp,
          updated_at: rustEvents[1].timestamp,
          finished_at: rustEvents[1].timestamp,
          terminal_reason: null,
          terminal_event_id: rustEvents[1].event_id,
          exit_code: 0,
          active_stage_count: 0,
          active_microvm_count: 0,
          policy: null,
          stage_states: null,
          artifact_publication: null,
        }),
      );
    });

    it("repairs the torn line, quarantines the corrupt file, loads the rest (and the Rust file)", async () => {
      const t = await daemon(state);
      const c = sdk(t.url);
      const good = await c.getRun("good");
      expect(good.status).toBe("succeeded");
      expect(good.events.length).toBe(goodEvents);
      const log = fs.readFileSync(path.join(state, "runs", "good", "events.jsonl"), "utf8");
      expect(log.endsWith("\n")).toBe(true);
      expect(log.trim().split("\n")).toHaveLength(goodEvents);

      const q: string[] = (await c.health()).quarantined_files!;
      expect(q).toHaveLength(1);
      expect(q[0]).toMatch(/^quarantine\/broken/);
      expect(fs.existsSync(path.join(state, q[0]))).toBe(true);
      expect(fs.existsSync(path.join(state, "runs", "broken"))).toBe(false);
      expect((await c.api.GET("/v1/runs/{run_id}", { params: { path: { run_id: "broken" } } })).response.status).toBe(404);

      const rust = await c.getRun("rust-1");
      expect(rust.status).toBe("succeeded"); // "completed" is accepted on input
      expect(rust.events.map((e) => e.event_type)).toEqual(["run.started", "run.finished"]);
      expect(rust.terminal_event_id).toBe(rustEvents[1].event_id);
      const ev = await c.listEvents("rust-1", { apiVersion: "v2" });
      expect(ev.map((e) => e.event_type)).toEqual(["RunStarted", "RunCompleted"]);
      const list = await c.listRuns({ state: "terminal" });
      expect(list.map((r) => r.id).sort()).toEqual(["good", "rust-1"]);
      const dup = await c.api.POST("/v1/runs", { body: { file: HELLO, run_id: "rust-1" } });
      expect(dup.response.status).toBe(409);
      await t.d.close();
    });

    it("a second restart loads the same runs with the same events (no duplication, nothing quarantined)", async () => {
      const t = await daemon(state);
      const c = sdk(t.url);
      expect((await c.getRun("rust-1")).events.map((e) => e.event_type)).toEqual(["run.started", "run.finished"]);
      expect((await c.getRun("good")).events.length).toBe(goodEvents);
      expect((await c.health()).quarantined_files).toEqual([]);
      await t.d.close();
      // The migrated Rust run must not be migrated again on every start: its event log
      // holds its 2 events once, whichever of runs/rust-1.json and runs/rust-1/ is read first.
      const log = fs.readFileSync(path.join(state, "runs", "rust-1", "events.jsonl"), "utf8").trim().split("\n");
      expect(log.map((l) => JSON.parse(l).seq)).toEqual([0, 1]);
    });
  });
});

describe("a sparse Rust void-box run file", () => {
  it("loads with the missing fields as null and is served conforming to openapi.yaml", async () => {
    const state = tmpDir();
    fs.mkdirSync(path.join(state, "runs"), { recursive: true });
    fs.writeFileSync(
      path.join(state, "runs", "rust-old.json"),
      JSON.stringify({
        id: "rust-old",
        status: "canceled",
        file: "/old.yaml",
        started_at: "2025-01-01T00:00:00Z",
        events: [{ run_id: "rust-old", event_id: "3f2b8c1e-4d5a-4b6c-8d7e-9f0a1b2c3d4e", event_type: "run.cancelled", message: "cancelled", timestamp: "2025-01-01T00:00:01Z" }],
      }),
    );
    const t = await daemon(state);
    const run = await sdk(t.url).api.GET("/v1/runs/{run_id}", { params: { path: { run_id: "rust-old" } } });
    expect(run.response.status).toBe(200);
    expect(validateResponse("getRun", 200, run.data)).toEqual([]);
    expect(run.data).toMatchObject({ status: "cancelled", exit_code: null, report: null, attempt_id: 1 });
    expect(run.data!.events[0]).toMatchObject({ seq: 0, event_type_v2: "RunCancelled", level: "info", payload: null });
  });
});
