// Property tests of POST /v1/runs and POST /v1/runs/{id}/cancel against the in-process server.
// Valid bodies come from the CreateRunRequest / CancelRunRequest schemas (json-schema-faker,
// seeded by fast-check so failures replay and shrink); invalid ones from fast-check.
// Every reply must be non-5xx and conform to openapi.yaml (the ApiClient throws otherwise).
import fc from "fast-check";
import { generateSync, type JsonSchema } from "json-schema-faker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, errorOf } from "../helpers/http.js";
import { jsonSchemaFor, validateSchema } from "../helpers/openapi.js";
import {
  isTerminal,
  uniqueRunId,
  waitForRun,
  waitForTerminal,
  writeFixtures,
  type Fixtures,
} from "../helpers/runs.js";
import { startInProcess, type Target } from "../helpers/targets.js";
import type { CancelRunResponse, CreateRunResponse, RunState } from "../helpers/types.js";

const NUM_RUNS = 100;
const CREATE_SCHEMA = jsonSchemaFor("CreateRunRequest") as JsonSchema;
const CANCEL_SCHEMA = jsonSchemaFor("CancelRunRequest") as JsonSchema;

/** A schema-valid value, generated deterministically from a fast-check seed. */
const fromSchema = (schema: JsonSchema) =>
  fc
    .integer({ min: 1, max: 2 ** 31 - 1 })
    .map((seed) => generateSync(schema, { seed, optionalsProbability: 0.6, maxLength: 48 }) as Record<string, unknown>);

let target: Target;
let api: ApiClient;
let fx: Fixtures;

beforeAll(async () => {
  fx = writeFixtures();
  target = await startInProcess();
  api = ApiClient.for(target);
});

afterAll(async () => {
  await target?.close();
  fx?.cleanup();
});

/** Sends a request; the client has already checked conformance, we add "never 5xx". */
async function send(path: string, opts: Parameters<ApiClient["post"]>[1]) {
  const res = await api.post<CreateRunResponse>(path, opts);
  expect(res.status, `${path} → ${res.status}: ${res.text.slice(0, 300)}`).toBeLessThan(500);
  return res;
}

describe("POST /v1/runs (property)", () => {
  it("schema-valid bodies (file existing or not) → 200 (or 409 for a reused terminal run_id)", async () => {
    const files = () => fc.constantFrom(fx.hello, fx.fail, fx.missing, fx.invalid);
    await fc.assert(
      fc.asyncProperty(fromSchema(CREATE_SCHEMA), fc.option(files(), { nil: undefined }), async (body, file) => {
        if (file !== undefined) body.file = file; // else keep the generated (non-existent) path
        fc.pre(validateSchema("CreateRunRequest", body).length === 0);
        const res = await send("/v1/runs", { json: body });
        // An inline `spec` is also checked against the run-spec format at create (openapi.yaml
        // InlineSpec): a generated object rarely is a valid spec, and that is a 400 naming body/spec.
        if (body.spec !== undefined && res.status === 400) {
          expect(errorOf(res).code).toBe("INVALID_SPEC");
          expect(errorOf(res).message).toMatch(/^body\/spec/);
          return;
        }
        expect([200, 409]).toContain(res.status);
        if (res.status === 200) {
          expect(typeof res.body.run_id).toBe("string");
          const run = await api.get<RunState>(`/v1/runs/${res.body.run_id}`);
          expect(run.status).toBe(200);
        } else {
          expect(errorOf(res).code).toBe("ALREADY_TERMINAL");
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("arbitrary JSON values → 400/200/409, never 5xx, always conforming", async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (value) => {
        const res = await send("/v1/runs", { raw: JSON.stringify(value) });
        const valid = validateSchema("CreateRunRequest", value).length === 0;
        if (!valid) expect(res.status).toBe(400);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("fc.anything() serialised → never 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.anything({ maxDepth: 3 }), async (value) => {
        const raw = JSON.stringify(value) ?? "undefined";
        await send("/v1/runs", { raw });
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("wrong types for `file` → 400 INVALID_SPEC", async () => {
    const wrong = fc.oneof(
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.string(), { maxLength: 3 }),
      fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
      fc.constant(""),
      fc.constant("x".repeat(4097)),
    );
    await fc.assert(
      fc.asyncProperty(wrong, async (file) => {
        const res = await send("/v1/runs", { json: { file } });
        expect(res.status).toBe(400);
        expect(errorOf(res).code).toBe("INVALID_SPEC");
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("out-of-range, huge, fractional or mistyped policy values → 400 INVALID_POLICY", async () => {
    const limits: Record<string, [number, number]> = {
      max_parallel_microvms_per_run: [1, 64],
      max_stage_retries: [0, 100],
      stage_timeout_secs: [1, 604800],
      cancel_grace_period_secs: [0, 86400],
    };
    const badValue = (key: string) => {
      const [min, max] = limits[key]!;
      return fc.oneof(
        fc.integer({ min: -(2 ** 31), max: min - 1 }),
        fc.integer({ min: max + 1, max: 2 ** 31 }),
        fc.constantFrom(1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, 2 ** 64, min + 0.5),
        fc.string({ maxLength: 8 }),
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.integer(), { maxLength: 2 }),
        fc.constant({ nested: { deeper: [1] } }),
      );
    };
    const badPolicy = fc.oneof(
      fc.constantFrom(...Object.keys(limits)).chain((key) => badValue(key).map((v) => ({ [key]: v }))),
      // unknown keys (not one of the four)
      fc
        .string({ minLength: 1, maxLength: 12 })
        .filter((k) => !(k in limits) && k !== "__proto__")
        .map((k) => ({ [k]: 1 })),
    );
    await fc.assert(
      fc.asyncProperty(badPolicy, async (policy) => {
        const res = await send("/v1/runs", { json: { file: fx.hello, policy } });
        expect(res.status, JSON.stringify(policy)).toBe(400);
        expect(errorOf(res).code).toBe("INVALID_POLICY");
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("deeply nested JSON → 400, never 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 20_000 }), fc.constantFrom("[", '{"a":'), async (depth, open) => {
        const close = open === "[" ? "]" : "}";
        const raw = open.repeat(depth) + "1" + close.repeat(depth);
        const res = await send("/v1/runs", { raw });
        expect(res.status).toBe(400);
      }),
      { numRuns: 30 },
    );
    // Also as a value inside an otherwise valid body (sent raw: the test's own JSON.stringify would overflow).
    const nested = '{"x":'.repeat(5000) + "1" + "}".repeat(5000);
    const res = await send("/v1/runs", { raw: `{"file":${JSON.stringify(fx.hello)},"policy":${nested}}` });
    expect(res.status).toBe(400);
    expect(errorOf(res).code).toBe("INVALID_POLICY");
  });

  it("random strings as raw bodies → 400 (unless they happen to be a valid request)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" })), async (raw) => {
        fc.pre(raw.trim().length > 0);
        const res = await send("/v1/runs", { raw });
        let parsed: unknown;
        try {
          parsed = JSON.parse(raw);
        } catch {
          expect(res.status).toBe(400);
          expect(errorOf(res).code).toBe("INVALID_SPEC");
          return;
        }
        if (validateSchema("CreateRunRequest", parsed).length > 0) expect(res.status).toBe(400);
      }),
      { numRuns: NUM_RUNS },
    );
  });
});

describe("POST /v1/runs/{id}/cancel (property)", () => {
  let done: RunState;
  let active: string;

  beforeAll(async () => {
    const res = await api.post<CreateRunResponse>("/v1/runs", { json: { file: fx.hello } });
    done = await waitForTerminal(api, res.body.run_id);
    active = uniqueRunId("prop-active");
    await api.post<CreateRunResponse>("/v1/runs", { json: { file: fx.sleep, run_id: active } });
    await waitForRun(api, active, (r) => r.events.some((e) => e.event_type === "stage.started"), {
      what: "stage started",
    });
  });

  afterAll(async () => {
    if (active) await api.post<CancelRunResponse>(`/v1/runs/${active}/cancel`, { conformance: "none" }).catch(() => undefined);
  });

  it("any body on a terminal run → 200 with the stored terminal_event_id, or 400; nothing changes", async () => {
    const body = fc.oneof(
      fromSchema(CANCEL_SCHEMA).map((v) => JSON.stringify(v)),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.string(),
    );
    await fc.assert(
      fc.asyncProperty(body, async (raw) => {
        const res = await send(`/v1/runs/${done.id}/cancel`, { raw });
        expect([200, 400]).toContain(res.status);
        if (res.status === 200) {
          expect(res.body).toEqual({ run_id: done.id, state: done.status, terminal_event_id: done.terminal_event_id });
        }
      }),
      { numRuns: NUM_RUNS },
    );
    const after = (await api.get<RunState>(`/v1/runs/${done.id}`)).body;
    expect(after.events.map((e) => e.event_id)).toEqual(done.events.map((e) => e.event_id));
    expect(after.status).toBe(done.status);
  });

  it("non-JSON non-empty bodies never cancel an active run (400 INVALID_SPEC)", async () => {
    const notJson = fc.string({ minLength: 1 }).filter((s) => {
      if (s.trim().length === 0) return false;
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    });
    await fc.assert(
      fc.asyncProperty(notJson, async (raw) => {
        const res = await send(`/v1/runs/${active}/cancel`, { raw });
        expect(res.status).toBe(400);
        expect(errorOf(res).code).toBe("INVALID_SPEC");
      }),
      { numRuns: NUM_RUNS },
    );
    const run = (await api.get<RunState>(`/v1/runs/${active}`)).body;
    expect(isTerminal(run.status)).toBe(false);
  });

  it("arbitrary run ids → 400 when unsafe, else 404 (or 200 for an existing run); never 5xx", async () => {
    const known = new Set([done.id, active]);
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 1, maxLength: 140 }), async (id) => {
        fc.pre(!known.has(id) && id !== "." && id !== "..");
        const res = await send(`/v1/runs/${encodeURIComponent(id)}/cancel`, {});
        const safe = validateSchema("SafeId", id).length === 0;
        if (!safe) {
          expect(res.status, `id ${JSON.stringify(id)}`).toBe(400);
        } else if (res.status !== 404) {
          // A safe id may name a run an earlier property created (json-schema-faker run_ids).
          expect(res.status, `id ${JSON.stringify(id)}`).toBe(200);
          expect((await api.get<RunState>(`/v1/runs/${encodeURIComponent(id)}`)).status).toBe(200);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
