// Run-spec fixtures (always `sandbox: {mode: mock}`) and waits on run state.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { CreateRunRequest } from "@voidbox/client";
import type { ApiClient } from "./http.js";
import { sdk } from "./sdk.js";
import type { PayloadOf, RunEvent, RunState, RunStatus } from "./types.js";
import { waitFor } from "./wait.js";
import { definition } from "./openapi.js";


/** The statuses a run ends in (openapi.yaml's RunStatus). */
export const TERMINAL: ReadonlySet<string> = new Set<RunStatus>(["succeeded", "failed", "cancelled"]);
export const isTerminal = (s: string) => TERMINAL.has(s);

/** Legacy → v2 names as openapi.yaml pairs them (EventType and EventTypeV2, same order): the contract, not the daemon's table. */
const V2_NAMES: Record<string, string> = (() => {
  const schemas = definition.components?.schemas ?? {};
  const names = (k: string) => ((schemas[k] ?? {}) as { enum?: string[] }).enum ?? [];
  const v2 = names("EventTypeV2");
  return Object.fromEntries(names("EventType").map((n, i) => [n, v2[i]!]));
})();

/** The v2 name of a legacy event type (table, else the generic split/capitalise rule). */
export function v2Name(legacy: string): string {
  return (
    V2_NAMES[legacy] ??
    legacy
      .split(/[._]/)
      .filter(Boolean)
      .map((p) => p[0]!.toUpperCase() + p.slice(1))
      .join("")
  );
}

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export interface Fixtures {
  dir: string;
  /** echo hello | tr a-z A-Z → succeeds with output "HELLO". */
  hello: string;
  /** step `nap` (sleep 300) then `after` (depends on nap) → stays running until cancelled. */
  sleep: string;
  /** a mock pipeline of two boxes (one skill) — for the plan events box.started / skill.mounted. */
  pipeline: string;
  /** a spec file that exists but is not a valid run spec (api_version v9). */
  invalid: string;
  /** one step `false` → the run fails with exit code 1. */
  fail: string;
  /** one step `sleep 5` (for stage_timeout_secs: 1). */
  slow: string;
  /** three independent `sleep 1` steps joined by an `echo` (for the parallelism cap). */
  fanout: string;
  /** a path that does not exist. */
  missing: string;
  /** How POST /v1/runs carries these fixtures (see `runRequest`). */
  mode: FixtureMode;
  /** Fixture path → spec text, for sending a fixture inline. */
  texts: ReadonlyMap<string, string>;
  /** The `file` a run created from this fixture records: its path, or the inline spec's file. */
  recorded(file: string): string;
  cleanup(): void;
}

/** How a run's spec reaches the target: a path on the target's filesystem, or inline. */
export type FixtureMode = "file" | "inline";

/** The `file` openapi.yaml says a run created with an inline `spec` records. */
const INLINE_SPEC_FILE = "inline:spec.json";

/**
 * The one switch between the two: a POST /v1/runs body as the suite writes it
 * (`{file: fx.hello, …}`), in the fixtures' mode. Inline (what a target on another host
 * needs: no shared filesystem), a fixture's `file` becomes `spec` (its YAML text); anything
 * else is sent as it is.
 */
export function runRequest(fx: Fixtures, body: unknown): unknown {
  if (fx.mode === "file" || body === null || typeof body !== "object" || Array.isArray(body)) return body;
  const { file, ...rest } = body as Record<string, unknown>;
  const text = typeof file === "string" ? fx.texts.get(file) : undefined;
  return text === undefined ? body : { ...rest, spec: text };
}

const specs = {
  "hello.yaml": `api_version: v1
kind: workflow
name: demo
sandbox: {mode: mock}
workflow:
  steps:
    - name: fetch
      run: {program: echo, args: ["hello"]}
    - name: shout
      depends_on: [fetch]
      run: {program: tr, args: ["a-z", "A-Z"], stdin_from: fetch}
  output_step: shout
`,
  "sleep.yaml": `api_version: v1
kind: workflow
name: long
sandbox: {mode: mock}
workflow:
  steps:
    - name: nap
      run: {program: sleep, args: ["300"]}
    - name: after
      depends_on: [nap]
      run: {program: echo, args: ["never"]}
  output_step: after
`,
  "pipeline.yaml": `api_version: v1
kind: pipeline
name: pipe
sandbox: {mode: mock}
pipeline:
  boxes:
    - name: writer
      prompt: write a haiku
      skills: ["agent:claude-code"]
    - name: reviewer
      prompt: review it
      skills: []
  stages:
    - {type: box, name: writer}
    - {type: box, name: reviewer}
`,
  "invalid.yaml": `api_version: v9
kind: workflow
name: not-a-valid-spec
`,
  "fail.yaml": `api_version: v1
kind: workflow
name: failing
sandbox: {mode: mock}
workflow:
  steps:
    - name: boom
      run: {program: "false", args: []}
  output_step: boom
`,
  "slow.yaml": `api_version: v1
kind: workflow
name: slow
sandbox: {mode: mock}
workflow:
  steps:
    - name: crawl
      run: {program: sleep, args: ["5"]}
  output_step: crawl
`,
  "fanout.yaml": `api_version: v1
kind: workflow
name: fanout
sandbox: {mode: mock}
workflow:
  steps:
    - name: a
      run: {program: sleep, args: ["1"]}
    - name: b
      run: {program: sleep, args: ["1"]}
    - name: c
      run: {program: sleep, args: ["1"]}
    - name: join
      depends_on: [a, b, c]
      run: {program: echo, args: ["done"]}
  output_step: join
`,
};

export function writeFixtures(mode: FixtureMode = "file"): Fixtures {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vbx-specs-"));
  for (const [name, text] of Object.entries(specs)) writeFileSync(path.join(dir, name), text);
  // `invalid` stays a path: the suite expects it to be accepted and then fail as a run
  // (spec.parse_failed), which a path the target cannot load does on any host.
  const texts = new Map(Object.entries(specs).filter(([n]) => n !== "invalid.yaml").map(([n, t]) => [path.join(dir, n), t] as const));
  return {
    mode,
    texts,
    recorded: (file) => (mode === "inline" && texts.has(file) ? INLINE_SPEC_FILE : file),
    dir,
    hello: path.join(dir, "hello.yaml"),
    sleep: path.join(dir, "sleep.yaml"),
    invalid: path.join(dir, "invalid.yaml"),
    pipeline: path.join(dir, "pipeline.yaml"),
    fail: path.join(dir, "fail.yaml"),
    slow: path.join(dir, "slow.yaml"),
    fanout: path.join(dir, "fanout.yaml"),
    missing: path.join(dir, "does-not-exist.yaml"),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

let counter = 0;
/** A caller-chosen run id that is unique within this process and safe per SafeId. */
export function uniqueRunId(prefix = "t"): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

/** GET /v1/runs/{id} through the contract suite's client, or on a base URL. */
async function getRun(from: ApiClient | string, runId: string): Promise<{ status: number; run: RunState }> {
  if (typeof from === "string") {
    const { data, response } = await sdk(from).api.GET("/v1/runs/{run_id}", { params: { path: { run_id: runId } } });
    return { status: response.status, run: data as RunState };
  }
  const r = await from.get<RunState>(`/v1/runs/${encodeURIComponent(runId)}`);
  return { status: r.status, run: r.body };
}

/**
 * Polls GET /v1/runs/{id} until `predicate` holds (waiting for an event, with an overall
 * deadline — never a bare sleep); returns that RunState.
 */
export async function waitForRun(
  from: ApiClient | string,
  runId: string,
  predicate: (run: RunState) => boolean,
  { timeoutMs = 20_000, what = "condition" } = {},
): Promise<RunState> {
  let last: { status: number; run: RunState } | undefined;
  return waitFor(
    async () => {
      last = await getRun(from, runId);
      return last.status === 200 && predicate(last.run) ? last.run : undefined;
    },
    () =>
      `run ${runId}: ${what} not reached within ${timeoutMs} ms; last status ${last?.status}, ` +
      `state ${last?.run?.status}, events ${JSON.stringify(last?.run?.events?.map((e) => e.event_type))}`,
    timeoutMs,
  );
}

export const waitForTerminal = (from: ApiClient | string, runId: string, timeoutMs = 20_000) =>
  waitForRun(from, runId, (r) => isTerminal(r.status), { timeoutMs, what: "terminal state" });

/** Waits for an event of this type (or matching this predicate); returns the RunState that has it. */
export const waitForEvent = (from: ApiClient | string, runId: string, match: string | ((e: RunEvent) => boolean), what?: string, timeoutMs = 20_000) =>
  waitForRun(from, runId, (r) => r.events.some(typeof match === "string" ? (e) => e.event_type === match : match), {
    timeoutMs,
    what: what ?? `event ${typeof match === "string" ? match : "matching"}`,
  });

/** Creates a run on a base URL (POST /v1/runs); returns its id, or throws with the reply. */
export async function createRun(url: string, file: string, extra: Partial<CreateRunRequest> = {}): Promise<string> {
  const { data, error, response } = await sdk(url).api.POST("/v1/runs", { body: { file, ...extra } });
  if (!data) throw new Error(`create failed: ${response.status} ${JSON.stringify(error)}`);
  return data.run_id;
}

/** Throws unless the events' seq run 0, 1, 2, … without a gap. */
export function assertGapless(events: Array<{ seq: number }>): void {
  events.forEach((e, i) => {
    if (e.seq !== i) throw new Error(`seq gap at index ${i}: ${e.seq}`);
  });
}

export const types = (events: RunEvent[]) => events.map((e) => e.event_type);

/** A run's events of one type, with the payload openapi.yaml declares for it. */
export function eventsOf<T extends keyof PayloadOf>(run: { events: RunEvent[] }, type: T): Array<RunEvent & { payload: PayloadOf[T] }>;
export function eventsOf(run: { events: RunEvent[] }, type: string): RunEvent[];
export function eventsOf(run: { events: RunEvent[] }, type: string): RunEvent[] {
  return run.events.filter((e) => e.event_type === type);
}
