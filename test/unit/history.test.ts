// A daemon with a history: pages of run summaries, terminal runs read back lazily after
// a restart (damaged ones quarantined when first read), summary.json derived again when
// missing or stale.
import { describe, it, expect, afterAll } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { errorOf, request } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { createRun, waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";
import type { RunList, RunPage } from "../helpers/types.js";

const open: TestDaemon[] = [];
afterAll(async () => {
  for (const t of open) await t.d.close();
});
async function daemon(stateDir = tmpDir("vbx-history-")) {
  const t = await startDaemon(stateDir);
  open.push(t);
  return t;
}
async function restart(t: TestDaemon): Promise<TestDaemon> {
  await t.d.close();
  open.splice(open.indexOf(t), 1);
  return daemon(t.stateDir);
}

const specDir = tmpDir("vbx-specs-");
const HELLO = writeSpec(specDir, workflow("hello", [{ name: "fetch", run: { program: "echo", args: ["hello"] } }]));
const SLEEPY = writeSpec(specDir, workflow("sleepy", [{ name: "nap", run: { program: "sleep", args: ["300"] } }]));

async function finishedRuns(t: TestDaemon, n: number, prefix: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(await createRun(t.url, HELLO, { run_id: `${prefix}-${i}` }));
  for (const id of ids) await waitForTerminal(t.url, id);
  return ids;
}

type RunsQuery = { limit?: number; cursor?: string; state?: "active" | "terminal"; api_version?: "v1" | "v2" };

/** GET /v1/runs: with `limit` or `cursor` a RunPage, else a RunList (the caller says which it asked for). */
async function runs<T extends RunList | RunPage>(url: string, query: RunsQuery = {}): Promise<{ status: number; json: T }> {
  const { data, response } = await sdk(url).api.GET("/v1/runs", { params: { query } });
  return { status: response.status, json: data as T };
}

/** A run's events as the bytes the daemon sent. */
async function eventBytes(url: string, id: string): Promise<Buffer> {
  const { data, response } = await sdk(url).api.GET("/v1/runs/{run_id}/events", { params: { path: { run_id: id } }, headers: { accept: "application/json" }, parseAs: "arrayBuffer" });
  expect(response.status).toBe(200);
  return Buffer.from(data!);
}

/** Every page of `query` (limit, state…), following next_cursor to the end. */
async function allPages(url: string, query: RunsQuery): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const r: { status: number; json: RunPage } = await runs<RunPage>(url, { ...query, cursor: cursor ?? undefined });
    expect(r.status).toBe(200);
    for (const s of r.json.runs) {
      expect((s as Record<string, unknown>).events).toBeUndefined(); // summaries only
      ids.push(s.id);
    }
    cursor = r.json.next_cursor;
    pages++;
  } while (cursor);
  return { ids, pages };
}

const summaryFile = (t: TestDaemon, id: string) => path.join(t.stateDir, "runs", id, "summary.json");

describe("GET /v1/runs pages", () => {
  it("pages list every run once, oldest first, and the default answer is unchanged (every run with its events, no cursor)", async () => {
    const t = await daemon();
    const ids = await finishedRuns(t, 5, "p");
    const full = await runs<RunList>(t.url);
    expect(Object.keys(full.json)).toEqual(["runs"]);
    expect(full.json.runs.map((r) => r.id)).toEqual(ids);
    for (const r of full.json.runs) expect(r.events.length).toBeGreaterThan(0);

    const paged = await allPages(t.url, { limit: 2 });
    expect(paged.ids).toEqual(ids);
    expect(paged.pages).toBe(3);
    const first = (await runs<RunPage>(t.url, { limit: 2 })).json;
    const fromFull = full.json.runs[0];
    expect(first.runs[0]).toEqual({
      id: fromFull.id,
      status: fromFull.status,
      file: fromFull.file,
      error: fromFull.error,
      attempt_id: fromFull.attempt_id,
      started_at: fromFull.started_at,
      updated_at: fromFull.updated_at,
      finished_at: fromFull.finished_at,
      terminal_reason: fromFull.terminal_reason,
      terminal_event_id: fromFull.terminal_event_id,
      exit_code: fromFull.exit_code,
      sandbox_mode: fromFull.sandbox_mode,
      event_count: fromFull.events.length,
    });
    // A cursor alone pages with the default size; a page that reaches the end has no cursor.
    const rest = (await runs<RunPage>(t.url, { cursor: first.next_cursor! })).json;
    expect(rest.runs.map((r) => r.id)).toEqual(ids.slice(2));
    expect(rest.next_cursor).toBeNull();
  });

  it("a cursor stays valid while runs are created: no run is skipped or listed twice, new ones come last", async () => {
    const t = await daemon();
    const ids = await finishedRuns(t, 4, "c");
    const page1 = (await runs<RunPage>(t.url, { limit: 2 })).json;
    const late = await Promise.all([createRun(t.url, SLEEPY, { run_id: "c-late-1" }), createRun(t.url, SLEEPY, { run_id: "c-late-2" })]);
    const seen = page1.runs.map((r) => r.id);
    let cursor = page1.next_cursor;
    while (cursor) {
      const page = (await runs<RunPage>(t.url, { limit: 2, cursor })).json;
      seen.push(...page.runs.map((r) => r.id));
      cursor = page.next_cursor;
    }
    expect(seen.slice(0, 4)).toEqual(ids);
    expect([...seen.slice(4)].sort()).toEqual([...late].sort());
    // The state filter applies to pages too.
    expect((await allPages(t.url, { limit: 1, state: "active" })).ids.sort()).toEqual([...late].sort());
    expect((await allPages(t.url, { limit: 3, state: "terminal" })).ids).toEqual(ids);
    for (const id of late) expect((await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } }, body: {} })).response.status).toBe(200);
  });

  it("a bad limit or cursor is 400 INVALID_PARAMS naming the parameter", async () => {
    const t = await daemon();
    await finishedRuns(t, 1, "b");
    const forged = Buffer.from(JSON.stringify({ after: "x" })).toString("base64url");
    for (const [query, param] of [
      ["limit=0", "query/limit"],
      ["limit=1001", "query/limit"],
      ["limit=ten", "query/limit"],
      ["limit=1.5", "query/limit"],
      ["cursor=not-a-cursor", "query/cursor"],
      [`cursor=${forged}`, "query/cursor"],
      [`limit=5&cursor=${"A".repeat(600)}`, "query/cursor"],
    ]) {
      const r = await request(t.url, `/v1/runs?${query}`);
      expect(r.status, query).toBe(400);
      expect(errorOf(r).code).toBe("INVALID_PARAMS");
      expect(errorOf(r).message, query).toContain(param);
      expect(errorOf(r).retryable).toBe(false);
    }
  });
});

describe("terminal runs after a restart", () => {
  it("are listed from summary.json and their events read back when asked for, byte for byte", async () => {
    let t = await daemon();
    const ids = await finishedRuns(t, 3, "l");
    const before = await Promise.all(ids.map((id) => eventBytes(t.url, id)));
    const stateBefore = await sdk(t.url).getRun(ids[1]);
    const listBefore = (await runs<RunList>(t.url)).json;
    const listV2Before = (await runs<RunList>(t.url, { api_version: "v2" })).json;
    for (const id of ids) expect(JSON.parse(fs.readFileSync(summaryFile(t, id), "utf8")).summary).toMatchObject({ id, status: stateBefore.status, event_count: stateBefore.events.length });
    t = await restart(t);
    // Start-up read no event log: nothing is loaded until asked for.
    expect(t.d.service.held()).toEqual({ runs: 0, cached: 0 });
    expect((await allPages(t.url, { limit: 2 })).ids).toEqual(ids);
    expect(t.d.service.held().cached).toBe(0);
    // The full listing (read from disk now) is what it was when every run was in memory.
    expect((await runs<RunList>(t.url)).json).toEqual(listBefore);
    expect((await runs<RunList>(t.url, { api_version: "v2" })).json).toEqual(listV2Before);
    expect(t.d.service.held().cached).toBe(0);
    for (const [i, id] of ids.entries()) expect((await eventBytes(t.url, id)).equals(before[i])).toBe(true);
    expect(await sdk(t.url).getRun(ids[1])).toEqual(stateBefore);
    expect((await sdk(t.url).api.GET("/v1/runs/{run_id}/stages", { params: { path: { run_id: ids[1] } } })).response.status).toBe(200);
    // A terminal run stays terminal: the same run_id is refused.
    expect(errorOf(await sdk(t.url).api.POST("/v1/runs", { body: { file: HELLO, run_id: ids[0] } })).code).toBe("ALREADY_TERMINAL");
  });

  it("one whose event log is found damaged when first read is quarantined, listed in /v1/health and answered 404; the others are served", async () => {
    let t = await daemon();
    const [bad, good] = await finishedRuns(t, 2, "q");
    t = await restart(t);
    // Damaged after start-up accepted its summary: only a read finds it.
    const log = path.join(t.stateDir, "runs", bad, "events.jsonl");
    fs.writeFileSync(log, fs.readFileSync(log, "utf8").replace(/"seq":1,/, '"seq":"one",'));
    const r = await sdk(t.url).api.GET("/v1/runs/{run_id}/events", { params: { path: { run_id: bad } }, headers: { accept: "application/json" } });
    expect(r.response.status).toBe(404);
    expect(errorOf(r).code).toBe("NOT_FOUND");
    expect(errorOf(r).message).toContain("quarantine");
    const health = await sdk(t.url).health();
    expect(health.quarantined_files).toHaveLength(1);
    expect(health.quarantined_files![0]).toMatch(new RegExp(`^quarantine/${bad}\\.`));
    expect(fs.existsSync(path.join(t.stateDir, health.quarantined_files![0], "events.jsonl"))).toBe(true);
    expect(fs.existsSync(path.join(t.stateDir, "runs", bad))).toBe(false);
    expect((await sdk(t.url).api.GET("/v1/runs/{run_id}", { params: { path: { run_id: bad } } })).response.status).toBe(404);
    expect((await runs<RunList>(t.url)).json.runs.map((x) => x.id)).toEqual([good]);
    expect((await allPages(t.url, { limit: 10 })).ids).toEqual([good]);
    expect((await sdk(t.url).api.GET("/v1/runs/{run_id}/events", { params: { path: { run_id: good } }, headers: { accept: "application/json" } })).response.status).toBe(200);
  });

  it("a full listing quarantines a damaged run it reads and lists the rest", async () => {
    let t = await daemon();
    const [bad, good] = await finishedRuns(t, 2, "f");
    t = await restart(t);
    fs.writeFileSync(path.join(t.stateDir, "runs", bad, "run.json"), "{ torn");
    const list = await runs<RunList>(t.url);
    expect(list.status).toBe(200);
    expect(list.json.runs.map((x) => x.id)).toEqual([good]);
    expect((await sdk(t.url).health()).quarantined_files).toHaveLength(1);
  });
});

describe("summary.json", () => {
  it("is derived again from run.json and events.jsonl when missing, torn or stale", async () => {
    let t = await daemon();
    const [missing, torn, stale] = await finishedRuns(t, 3, "s");
    const status = (await sdk(t.url).getRun(missing)).status;
    expect(["succeeded", "failed"]).toContain(status);
    await t.d.close();
    open.splice(open.indexOf(t), 1);
    fs.rmSync(summaryFile(t, missing));
    fs.writeFileSync(summaryFile(t, torn), '{"summary": {"id"');
    // A summary that no longer matches its files (here: claims another status, and run.json changed since).
    const s = JSON.parse(fs.readFileSync(summaryFile(t, stale), "utf8"));
    s.summary.status = "cancelled";
    fs.writeFileSync(summaryFile(t, stale), JSON.stringify(s));
    const runJson = path.join(t.stateDir, "runs", stale, "run.json");
    fs.writeFileSync(runJson, fs.readFileSync(runJson, "utf8") + "\n");

    t = await daemon(t.stateDir);
    const page = (await runs<RunPage>(t.url, { limit: 10 })).json;
    expect(page.runs.map((r) => [r.id, r.status])).toEqual([missing, torn, stale].map((id) => [id, status]));
    expect((await sdk(t.url).health()).quarantined_files).toEqual([]);
    // Written again in the background after start-up, matching the files as they are now.
    await waitFor(() => [missing, torn, stale].every((id) => fs.existsSync(summaryFile(t, id)) && JSON.parse(fs.readFileSync(summaryFile(t, id), "utf8")).summary.status === status), "summaries rewritten");
    t = await restart(t);
    expect(t.d.service.held().runs).toBe(0);
    expect((await runs<RunPage>(t.url, { limit: 10 })).json.runs.map((r) => r.status)).toEqual([status, status, status]);
  });
});

describe("RunCache", () => {
  it("keeps read-back runs up to its byte bound, least recently used out first, the latest always kept", async () => {
    const { RunCache } = await import("../../src/runs/run-cache.js");
    type CachedRun = Parameters<InstanceType<typeof RunCache>["put"]>[0];
    const run = (id: string, jsonBytes: number) => ({ id, jsonBytes }) as unknown as CachedRun;
    // Each costs 3 × jsonBytes + 4096: 10,000 bytes of events ≈ 34 KB.
    const cache = new RunCache(100_000);
    cache.put(run("a", 10_000));
    cache.put(run("b", 10_000));
    expect(cache.get("a")?.id).toBe("a"); // a is now the most recently used
    cache.put(run("c", 10_000));
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")?.id).toBe("a");
    cache.put(run("huge", 1_000_000));
    expect(cache.size).toBe(1);
    expect(cache.get("huge")?.id).toBe("huge");
    cache.delete("huge");
    expect(cache.size).toBe(0);
  });
});
