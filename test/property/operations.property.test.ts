// Property test over EVERY operation of openapi.yaml against the in-process server:
// random valid and invalid path parameters, query strings and bodies. Whatever comes in,
// the reply is never a 5xx and always conforms to openapi.yaml (ApiClient checks that).
import fc from "fast-check";
import { generateSync, type JsonSchema } from "json-schema-faker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../helpers/http.js";
import { operations, type OperationInfo } from "../helpers/openapi.js";
import { waitForTerminal, writeFixtures, type Fixtures } from "../helpers/runs.js";
import { startInProcess, type Target } from "../helpers/targets.js";
import type { CreateRunResponse } from "../helpers/types.js";

const NUM_RUNS = 60;

let target: Target;
let api: ApiClient;
let fx: Fixtures;
let knownRun: string;

beforeAll(async () => {
  fx = writeFixtures();
  target = await startInProcess();
  api = ApiClient.for(target);
  knownRun = (await api.post<CreateRunResponse>("/v1/runs", { json: { file: fx.hello } })).body.run_id;
  await waitForTerminal(api, knownRun);
});

afterAll(async () => {
  await target?.close();
  fx?.cleanup();
});

/** A path segment: a known run, a safe id, or anything at all (percent-encoded). */
const segment = () =>
  fc.oneof(
    fc.constant("__known__"),
    fc.constantFrom("main", "result.json", "report.txt", "s1"),
    fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/),
    fc.string({ maxLength: 40 }).filter((s) => s.length > 0 && s !== "." && s !== ".."),
    fc.constantFrom("..", "a..b", ".hidden", "%2e%2e", "x".repeat(200)),
  );

const queryFor = (names: string[]) =>
  fc.dictionary(fc.constantFrom(...names, "extra", "state", "api_version", "from_event_id"), fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom("v2", "active", "terminal", "x".repeat(65), "y".repeat(129))), { maxKeys: 4 });

function bodyArbitrary(op: OperationInfo): fc.Arbitrary<{ raw?: string; json?: unknown } | undefined> {
  // openapi-backend has dereferenced the spec; the generator gets its own copy.
  const schema = op.requestBody && "content" in op.requestBody ? op.requestBody.content["application/json"]?.schema : undefined;
  if (!schema) return fc.constant(undefined);
  const jsonSchema = structuredClone(schema) as JsonSchema;
  const valid = fc.integer({ min: 1, max: 2 ** 31 - 1 }).map((seed) => ({ json: generateSync(jsonSchema, { seed, optionalsProbability: 0.5, maxLength: 32 }) }));
  return fc.oneof(valid, fc.jsonValue({ maxDepth: 3 }).map((json) => ({ json })), fc.string({ maxLength: 60 }).map((raw) => ({ raw })), fc.constant(undefined));
}

describe("every operation (property)", () => {
  // A drain ends the daemon every property shares (and then refuses creates): test/fleet/drain.test.ts covers it.
  for (const info of [...operations.values()].filter((o) => o.operationId !== "drainNode")) {
    it(`${info.method.toUpperCase()} ${info.path}: no 5xx, every reply conforms`, async () => {
      const names = [...info.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      // openapi-backend lists an operation with its path-level parameters merged in.
      const queryNames = (info.parameters ?? []).flatMap((p) => ("in" in p && p.in === "query" ? [p.name] : []));
      await fc.assert(
        fc.asyncProperty(fc.tuple(...names.map(() => segment())), queryFor(queryNames.length ? queryNames : ["x"]), bodyArbitrary(info), async (segs, query, body) => {
          let path = info.path;
          names.forEach((n, i) => {
            path = path.replace(`{${n}}`, segs[i] === "__known__" ? knownRun : encodeURIComponent(segs[i]));
          });
          const res = await api.request(info.method.toUpperCase(), path, { query, ...(body ?? {}) });
          expect(res.status, `${info.method} ${path} → ${res.status}: ${res.text.slice(0, 200)}`).toBeLessThan(500);
        }),
        { numRuns: NUM_RUNS },
      );
    }, 60_000);
  }
});
