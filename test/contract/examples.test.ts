// The mock tells the truth: every error reply the server sends for a request below is, byte for
// byte as JSON, one of the examples openapi.yaml declares for that operation and status — so a
// consumer developing against `make mock` (which answers with those examples) sees the server's
// real codes and wording. A new message or a reworded one fails here until the spec's examples
// say the same.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, type ApiResponse } from "../helpers/http.js";
import { declaredResponse, matchOperation } from "../helpers/openapi.js";
import { waitForTerminal } from "../helpers/runs.js";
import { startInProcess, type Target } from "../helpers/targets.js";

const HELLO = `api_version: v1
kind: workflow
name: hello
sandbox: {mode: mock}
workflow:
  steps:
    - name: fetch
      run: {program: echo, args: ["hello"]}
    - name: shout
      depends_on: [fetch]
      run: {program: tr, args: ["a-z", "A-Z"], stdin_from: fetch}
  output_step: shout
`;

/** The example values declared for an operation's status (`example` or every `examples.*.value`). */
function declaredExamples(method: string, pathname: string, status: number): unknown[] {
  const op = matchOperation(method, pathname);
  if (!op) throw new Error(`${method} ${pathname} is not an operation of openapi.yaml`);
  const content = declaredResponse(op.operationId, status)?.content?.["application/json"];
  if (!content) return [];
  const out: unknown[] = [];
  if (content.example !== undefined) out.push(content.example);
  for (const ex of Object.values(content.examples ?? {})) if ("value" in ex) out.push(ex.value);
  return out;
}

describe("openapi.yaml error examples are the server's real replies", () => {
  let target: Target;
  let api: ApiClient;
  let hello: string;

  beforeAll(async () => {
    target = await startInProcess();
    api = ApiClient.for(target);
    hello = path.join(target.stateDir!, "..", `${path.basename(target.stateDir!)}-hello.yaml`);
    writeFileSync(hello, HELLO);
    // The run the "known run" cases below talk about: `build-42`, as in the spec's examples.
    expect((await api.post("/v1/runs", { json: { file: hello, run_id: "build-42" } })).status).toBe(200);
    const run = await waitForTerminal(api, "build-42");
    expect(run.status, JSON.stringify(run.events.map((e) => e.message))).toBe("succeeded");
  });

  afterAll(async () => {
    await target?.close();
    const { rmSync } = await import("node:fs");
    if (hello) rmSync(hello, { force: true });
  });

  const BAD_ID = "a..b";
  const cases: Array<[label: string, method: string, path: string, body?: string]> = [
    ["an empty object", "POST", "/v1/runs", "{}"],
    ["file of the wrong type", "POST", "/v1/runs", '{"file":42}'],
    ["empty file", "POST", "/v1/runs", '{"file":""}'],
    ["both file and spec", "POST", "/v1/runs", '{"file":"x.yaml","spec":"kind: workflow"}'],
    ["inline spec text that is not YAML", "POST", "/v1/runs", '{"spec":"kind: ["}'],
    ["unsafe run_id", "POST", "/v1/runs", '{"file":"x.yaml","run_id":"a..b"}'],
    ["JSON that is not an object", "POST", "/v1/runs", "[]"],
    ["malformed JSON", "POST", "/v1/runs", '{"file": '],
    ["neither file nor spec", "POST", "/v1/runs", '{"run_id":"x"}'],
    ["an invalid inline spec", "POST", "/v1/runs", JSON.stringify({ spec: { api_version: "v1", kind: "workflow", name: "x", sandbox: { mode: "cloud" }, workflow: { steps: [{ name: "a", run: { program: "true" } }], output_step: "a" } } })],
    ["input over its bound", "POST", "/v1/runs", JSON.stringify({ file: "x.yaml", input: "a".repeat(2 * 1024 * 1024) })],
    ["policy out of range", "POST", "/v1/runs", '{"file":"x.yaml","policy":{"max_parallel_microvms_per_run":0}}'],
    ["unknown policy key", "POST", "/v1/runs", '{"file":"x.yaml","policy":{"turbo":true}}'],
    ["run id already terminal", "POST", "/v1/runs", '{"file":"x.yaml","run_id":"build-42"}'],
    ["body over the cap", "POST", "/v1/runs", JSON.stringify({ file: "x.yaml", pad: "a".repeat(4 * 1024 * 1024 + 16) })],
    ["query over its bound", "GET", `/v1/runs?state=${"x".repeat(65)}`],
    ["unknown run", "GET", "/v1/runs/unknown-run"],
    ["unsafe run id", "GET", `/v1/runs/${BAD_ID}`],
    ["events of an unknown run", "GET", "/v1/runs/unknown-run/events"],
    ["stages of an unknown run", "GET", "/v1/runs/unknown-run/stages"],
    ["cancel an unknown run", "POST", "/v1/runs/unknown-run/cancel", '{"reason":"x"}'],
    ["cancel with malformed JSON", "POST", "/v1/runs/build-42/cancel", '{"reason": '],
    ["cancel with a reason that is not a string", "POST", "/v1/runs/build-42/cancel", '{"reason":42}'],
    ["output of a stage without result.json", "GET", "/v1/runs/build-42/stages/main/output-file"],
    ["output of an unknown run", "GET", "/v1/runs/unknown-run/stages/main/output-file"],
    ["artifact that does not exist", "GET", "/v1/runs/build-42/stages/main/artifacts/report.txt"],
    ["artifact of an unknown run", "GET", "/v1/runs/unknown-run/stages/main/artifacts/report.txt"],
    ["session message without role", "POST", "/v1/sessions/s1/messages", '{"content":"x"}'],
    ["session message malformed JSON", "POST", "/v1/sessions/s1/messages", '{"role": '],
  ];

  it.each(cases)("%s: the reply is a declared example", async (_label, method, pathname, raw) => {
    const res: ApiResponse = await api.request(method, pathname, raw === undefined ? {} : { raw });
    expect(res.status).toBeGreaterThanOrEqual(400);
    // The spec's examples name run build-42 and stage main; ids of this request are mapped to those.
    const body = JSON.parse(JSON.stringify(res.body).replaceAll("unknown-run", "build-42"));
    const examples = declaredExamples(method, pathname.split("?")[0]!, res.status);
    expect(examples, `declared examples of ${method} ${pathname} ${res.status}`).toContainEqual(body);
  });
});
