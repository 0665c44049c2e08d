// The HTTP contract suite's shared set-up: each topic file calls contractSuite(), which
// runs its cases against every selected target (test/helpers/targets.ts: the in-process
// server, the daemon as a separate process, the Prism mock; or the implementation at
// VOIDBOX_CONFORMANCE_URL). Every reply passes the conformance gate
// (test/helpers/conformance.ts: declared status, media type, headers and body schema, one
// Content-Length) before a test looks at it. Where Prism cannot answer like the daemon,
// a case is skipped or asserts less there, naming the relaxation (R1–R6, test/contract/README.md).
import { afterAll, beforeAll, describe, expect } from "vitest";
import { ApiClient, type ApiResponse } from "../../helpers/http.js";
import {
  RFC3339,
  UUID_V7,
  runRequest,
  v2Name,
  waitForRun,
  waitForTerminal,
  writeFixtures,
  type Fixtures,
} from "../../helpers/runs.js";
import { selectedTargets, type Target, type TargetFactory } from "../../helpers/targets.js";
import type { CreateRunResponse, RunEvent, RunState, RunStatus } from "../../helpers/types.js";

export const ACTIVE: readonly RunStatus[] = ["pending", "starting", "running"];

/** The stage an event belongs to (context field, else payload). */
export function stageOf(e: RunEvent): string | undefined {
  const p = (e.payload ?? {}) as Record<string, unknown>;
  return (e.stage_name ?? (p.stage as string | undefined) ?? (p.stage_name as string | undefined)) ?? undefined;
}

/** An event's payload fields (each event type declares its own; the tests read a few). */
export function payload(e: RunEvent | undefined): Record<string, unknown> {
  return (e?.payload ?? {}) as Record<string, unknown>;
}

/** Envelope rules of openapi.yaml's RunEvent for one run's (legacy-named) events. */
export function expectEnvelope(run: RunState, events: RunEvent[] = run.events): void {
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
export function expectPrismViolation(res: ApiResponse, field: string): void {
  const header = res.headers.get("sl-violations") ?? "";
  expect(header, "sl-violations header").not.toBe("");
  expect(header).toMatch(new RegExp(field));
}

export interface ContractContext {
  factory: TargetFactory;
  isPrism: boolean;
  /** Set before the first case runs. */
  readonly target: Target;
  readonly api: ApiClient;
  readonly fx: Fixtures;
  /** Runs to cancel before the target stops. */
  longRuns: Set<string>;
  create(body: unknown, opts?: Parameters<ApiClient["post"]>[1]): Promise<ApiResponse<CreateRunResponse>>;
  /** Starts a long-running run whose `nap` stage is running (waited for via events). */
  startLongRun(runId?: string): Promise<string>;
  /** A finished echo|tr workflow, shared by read-only cases (created once per target and file). */
  helloRun(): Promise<RunState>;
}

export function contractSuite(topic: string, cases: (s: ContractContext) => void): void {
  describe.each(selectedTargets().map((f) => [f.name, f] as const))(`HTTP contract, ${topic} — %s`, (_name, factory) => {
    let target: Target | undefined;
    let api: ApiClient | undefined;
    let fx: Fixtures | undefined;
    const longRuns = new Set<string>();
    const ready = <T>(v: T | undefined, what: string): T => {
      if (v === undefined) throw new Error(`${what} is set in beforeAll`);
      return v;
    };
    let hello: Promise<RunState> | undefined;

    const s: ContractContext = {
      factory,
      isPrism: factory.kind === "prism",
      get target() {
        return ready(target, "target");
      },
      get api() {
        return ready(api, "api");
      },
      get fx() {
        return ready(fx, "fx");
      },
      longRuns,
      create: (body, opts = {}) => s.api.post<CreateRunResponse>("/v1/runs", { json: runRequest(s.fx, body), ...opts }),
      async startLongRun(runId) {
        const res = await s.create(runId ? { file: s.fx.sleep, run_id: runId } : { file: s.fx.sleep });
        expect(res.status).toBe(200);
        const id = res.body.run_id;
        longRuns.add(id);
        await waitForRun(s.api, id, (r) => r.events.some((e) => e.event_type === "stage.started" && stageOf(e) === "nap"), {
          what: "stage nap started",
        });
        return id;
      },
      helloRun: () =>
        (hello ??= (async () => {
          const res = await s.create({ file: s.fx.hello });
          expect(res.status).toBe(200);
          return waitForTerminal(s.api, res.body.run_id);
        })()),
    };

    beforeAll(async () => {
      fx = writeFixtures(factory.fixtures);
      target = await factory.start();
      api = ApiClient.for(target);
    });

    afterAll(async () => {
      if (target && api && !s.isPrism) {
        for (const id of longRuns) await api.post(`/v1/runs/${id}/cancel`, { conformance: "none" }).catch(() => undefined);
      }
      await target?.close();
      fx?.cleanup();
    });

    cases(s);
  });
}
