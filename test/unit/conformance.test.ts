// The conformance gate itself: a stub server answers each request with a reply the test
// chooses, the contract suite's ApiClient fetches it through a gate with a private tally (so
// these deliberate violations stay out of the run's summary), and the gate must pass what
// openapi.yaml allows and fail what it does not, naming the operation, status and rule.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConformanceError, createGate, replyViolations, type Rule } from "../helpers/conformance.js";
import setup, { summarise, type FileTally } from "../helpers/conformance-global.js";
import { flushTally, tally as sharedTally, type Tally } from "../helpers/conformance-tally.js";
import { ApiClient, errorOf } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import type { Health } from "../helpers/types.js";

interface Stub {
  status: number;
  headers?: Record<string, string>;
  body: string | Buffer;
  /** Send without Content-Length (node then chunks the body). */
  chunked?: boolean;
}

let next: Stub = { status: 200, body: "" };
let server: http.Server;
let client: ApiClient;
const tally: Tally = { checked: 0, unchecked: 0, violations: 0, pairs: {}, examples: [] };

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const body = Buffer.isBuffer(next.body) ? next.body : Buffer.from(next.body);
      const headers: Record<string, string | number> = { ...next.headers };
      if (!next.chunked) headers["content-length"] = body.length;
      res.writeHead(next.status, headers);
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  client = new ApiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, "inprocess", createGate(tally));
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

const json = (status: number, value: unknown): Stub => ({ status, headers: { "content-type": "application/json; charset=utf-8" }, body: JSON.stringify(value) });
const HEALTH = { status: "ok", persistence: "json-files", version: "0.1.0", accelerator: null, guest_kernel: null, sandbox_modes: ["mock"], quarantined_files: [] };
const NOT_FOUND = { code: "NOT_FOUND", message: "run x not found", retryable: false };

/** Serves `stub` for `method path`, expects the client to throw, and returns the gate's error. */
async function rejected(method: string, path: string, stub: Stub): Promise<ConformanceError> {
  next = stub;
  const err = await client.request(method, path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `${method} ${path} → ${stub.status} should fail the gate`).toBeInstanceOf(ConformanceError);
  return err as ConformanceError;
}

function expectRule(err: ConformanceError, operation: string, status: number, rule: Rule, message: RegExp): void {
  expect(err.violations.map((v) => v.rule)).toContain(rule);
  const v = err.violations.find((x) => x.rule === rule)!;
  expect(v).toMatchObject({ operation, status });
  expect(v.message).toMatch(message);
  // The test failure names the operation, the status and the rule.
  expect(err.message).toContain(operation.startsWith("(") ? operation : `(${operation})`);
  expect(err.message).toContain(`→ ${status}`);
  expect(err.message).toContain(`[${rule}]`);
}

describe("conformance gate", () => {
  it("passes replies the spec allows (nullable fields, 4xx ApiErrors, an artifact's own media type)", async () => {
    const before = tally.checked;
    next = json(200, HEALTH);
    expect((await client.get<Health>("/v1/health")).status).toBe(200);
    next = json(404, NOT_FOUND);
    expect(errorOf(await client.get("/v1/runs/x")).code).toBe("NOT_FOUND");
    next = { status: 200, headers: { "content-type": "text/markdown" }, body: "# notes\n" };
    expect((await client.get("/v1/runs/x/stages/main/artifacts/notes.md")).text).toBe("# notes\n");
    next = { status: 200, headers: { "content-type": "application/octet-stream" }, body: Buffer.from([0, 255, 1]) };
    expect((await client.get("/v1/runs/x/stages/main/artifacts/blob")).bytes).toEqual(Buffer.from([0, 255, 1]));
    next = json(404, { code: "NOT_FOUND", message: "route not found", retryable: false });
    expect((await client.get("/v1/nope")).status).toBe(404);
    expect(tally.checked - before).toBe(5);
  });

  it("fails a wrong status: one the operation does not declare", async () => {
    const err = await rejected("GET", "/v1/runs/x", json(500, { code: "INTERNAL_ERROR", message: "boom", retryable: true }));
    expectRule(err, "getRun", 500, "status", /status 500 is not declared \(declared: 200, 400, 401, 404\)/);
  });

  it("fails a wrong body field: missing, mistyped, out of its enum, unknown in a closed schema", async () => {
    const { persistence: _dropped, ...noPersistence } = HEALTH;
    expectRule(await rejected("GET", "/v1/health", json(200, noPersistence)), "getHealth", 200, "body", /must have required property 'persistence'/);
    expectRule(await rejected("GET", "/v1/health", json(200, { ...HEALTH, accelerator: "hvf" })), "getHealth", 200, "body", /\/accelerator must be equal to one of the allowed values/);
    expectRule(await rejected("GET", "/v1/runs/x", json(404, { ...NOT_FOUND, retryable: "no" })), "getRun", 404, "body", /\/retryable must be boolean/);
    expectRule(await rejected("GET", "/v1/runs/x", json(404, { ...NOT_FOUND, hint: "x" })), "getRun", 404, "body", /must NOT have additional properties/);
    expectRule(await rejected("GET", "/v1/runs/x", json(404, { ...NOT_FOUND, code: "GONE" })), "getRun", 404, "body", /\/code must be equal to one of the allowed values/);
  });

  it("fails a wrong content type, and JSON that is not JSON", async () => {
    const text = { status: 200, headers: { "content-type": "text/plain" }, body: JSON.stringify(HEALTH) };
    expectRule(await rejected("GET", "/v1/health", text), "getHealth", 200, "content-type", /text\/plain is not declared for 200 \(declared: application\/json\)/);
    const markdownError = { status: 404, headers: { "content-type": "text/markdown" }, body: "not found" };
    expectRule(await rejected("GET", "/v1/runs/x/stages/main/artifacts/a.md", markdownError), "getStageArtifact", 404, "content-type", /text\/markdown is not declared for 404/);
    const untyped = { status: 200, body: "{}" };
    expectRule(await rejected("GET", "/v1/runs/x/stages/main/output-file", untyped), "getStageOutputFile", 200, "content-type", /no Content-Type/);
    const broken = { status: 200, headers: { "content-type": "application/json" }, body: '{"status": ' };
    expectRule(await rejected("GET", "/v1/health", broken), "getHealth", 200, "body", /not JSON/);
  });

  it("fails a route the spec does not have unless it is the ApiError 404", async () => {
    expectRule(await rejected("GET", "/v2/runs", json(200, { runs: [] })), "(no operation)", 200, "route", /not an operation of the spec and answered 200, not 404 NOT_FOUND/);
    expectRule(await rejected("DELETE", "/v1/runs", json(404, { error: "nope" })), "(no operation)", 404, "body", /ApiError/);
    expectRule(await rejected("GET", "/v1/nope", json(404, { ...NOT_FOUND, code: "INVALID_PARAMS" })), "(no operation)", 404, "route", /answered 404 INVALID_PARAMS/);
    // 401 first on a listener that requires a token is allowed; any other 401 is not.
    next = json(401, { code: "UNAUTHORIZED", message: "missing or invalid bearer token", retryable: false });
    expect((await client.get("/v1/nope")).status).toBe(401);
    expectRule(await rejected("GET", "/v1/nope", json(401, NOT_FOUND)), "(no operation)", 401, "route", /answered 401 NOT_FOUND/);
  });

  it("a HEAD reply: no body to check, its status still must be 404 (or 401) outside the operations", () => {
    const headers = { "content-type": "application/json; charset=utf-8", "content-length": "61" };
    expect(replyViolations({ method: "HEAD", path: "/v1/health", status: 404, headers, body: "" })).toEqual([]);
    expect(replyViolations({ method: "HEAD", path: "/v1/health", status: 200, headers, body: "" }).map((v) => v.rule)).toEqual(["route"]);
  });

  it("fails a reply without one explicit Content-Length", async () => {
    const err = await rejected("GET", "/v1/health", { ...json(200, HEALTH), chunked: true });
    expectRule(err, "getHealth", 200, "transport", /chunked/);
    expect(err.violations.map((v) => v.rule)).toContain("transport");
  });

  it("counts what it checked and what it failed (the numbers behind the run's summary line)", () => {
    // 6 conforming replies, 15 drifted ones.
    expect(tally.checked).toBe(21);
    expect(tally.violations).toBe(15);
    expect(tally.pairs["getRun 500"]).toBe(1);
    expect(tally.examples[0]).toMatch(/^reply does not conform to openapi\.yaml: GET \/v1\/runs\/x → 500 \(getRun\)/);
  });

  it("checks the path as sent: dot segments a URL parser would resolve are the server's to answer", () => {
    const apiError = { code: "INVALID_PARAMS", message: "path/session_id: must match pattern", retryable: false };
    const reply = { method: "GET", path: "/v1/sessions/../messages", status: 400, headers: { "content-type": "application/json", "content-length": String(JSON.stringify(apiError).length) }, body: JSON.stringify(apiError) };
    expect(replyViolations(reply)).toEqual([]);
  });
});

describe("conformance gate: the tests' SDK client", () => {
  it("passes every reply the SDK receives through the gate before the SDK sees it, errors included", async () => {
    const own: Tally = { checked: 0, unchecked: 0, violations: 0, pairs: {}, examples: [] };
    const c = sdk(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { gate: createGate(own) });
    next = json(200, HEALTH);
    expect((await c.health()).persistence).toBe("json-files");
    next = json(404, NOT_FOUND);
    await expect(c.getRun("x")).rejects.toMatchObject({ name: "VoidboxError", status: 404, code: "NOT_FOUND" });
    next = json(200, { ...HEALTH, accelerator: "hvf" });
    const err = await c.health().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConformanceError);
    expectRule(err as ConformanceError, "getHealth", 200, "body", /\/accelerator must be equal to one of the allowed values/);
    expect(own).toMatchObject({ checked: 3, violations: 1, pairs: { "getHealth 200": 2, "getRun 404": 1 } });
  });
});

describe("conformance gate: the run's summary", () => {
  const file = (over: Partial<FileTally>): FileTally => ({ file: "t.test.ts", checked: 0, unchecked: 0, violations: 0, pairs: {}, examples: [], ...over });

  it("sums every test file's tally into one line", () => {
    const { line, failure } = summarise([
      file({ checked: 3, pairs: { "getHealth 200": 2, "(no operation) 404": 1 } }),
      file({ checked: 2, unchecked: 1, pairs: { "getRun 200": 1, "getHealth 200": 1 } }),
    ]);
    expect(line).toBe("conformance gate: 5 replies checked against openapi.yaml (2 operations, 3 operation/status pairs), 0 violations; 1 replies deliberately unchecked");
    expect(failure).toBeUndefined();
  });

  it("fails the run when a violation was swallowed by a test, quoting it", () => {
    const { line, failure } = summarise([file({ checked: 1, violations: 1, pairs: { "getRun 500": 1 }, examples: ["reply does not conform … (getRun)"] })]);
    expect(line).toMatch(/, 1 violations$/);
    expect(failure).toMatch(/^conformance gate: 1 replies violate openapi\.yaml\nt\.test\.ts: reply does not conform … \(getRun\)$/);
  });

  it("hands each test process a directory and reads the tallies flushed into it", async () => {
    let dir = "";
    const teardown = setup({ provide: ((_key: string, value: string) => void (dir = value)) as never });
    // This file's clients use a private tally, so the shared one is free to stand in for a test file's.
    expect(sharedTally.checked).toBe(0);
    Object.assign(sharedTally, { checked: 2, unchecked: 1, violations: 0, pairs: { "getRun 200": 1, "getRun 404": 1 }, examples: [] });
    flushTally(dir, "x.test.ts");
    expect(sharedTally).toMatchObject({ checked: 0, unchecked: 0, pairs: {} });
    const log: string[] = [];
    const original = console.log;
    console.log = (s: string) => void log.push(s);
    try {
      teardown();
    } finally {
      console.log = original;
    }
    expect(log).toEqual(["conformance gate: 2 replies checked against openapi.yaml (1 operations, 2 operation/status pairs), 0 violations; 1 replies deliberately unchecked"]);
    expect(process.exitCode ?? 0).toBe(0);
  });
});
