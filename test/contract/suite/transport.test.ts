// Health, auth, routing and error replies; request-size cap; bearer auth on TCP; state-dir isolation.
// Part of the HTTP contract suite (see _suite.ts and README.md): run unchanged against the
// in-process server, the daemon as a separate process and the Prism mock.
import { rmSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ApiClient, rawHttp, errorOf } from "../../helpers/http.js";
import { validateResponse, validateSchema } from "../../helpers/openapi.js";
import { runRequest, uniqueRunId, waitForTerminal } from "../../helpers/runs.js";
import type { RunState } from "../../helpers/types.js";
import { startDaemon } from "../../helpers/daemon.js";
import { makeStateDir } from "../../helpers/targets.js";
import { contractSuite } from "./_suite.js";
import type { CreateRunResponse, Health, RunEvent, RunList, SessionMessage, StageList } from "../../helpers/types.js";

contractSuite("transport", (s) => {
  const { factory, isPrism, create, helloRun } = s;

  // ── transport, health, errors ─────────────────────────────────────────────
  describe("health, auth, routing, errors", () => {
    it("GET /v1/health → 200 {status: ok, persistence: <name>}", async () => {
      const res = await s.api.get<Health>("/v1/health");
      expect(res.status).toBe(200);
      expect(res.body.status).toBe("ok");
      expect(typeof res.body.persistence).toBe("string");
      expect(res.body.persistence.length).toBeGreaterThan(0);
    });

    // A target given a token (`make conformance TOKEN=…`) requires it: this case is for auth-less ones.
    it.skipIf(factory.requiresToken)("auth disabled: a request without a token is served (R6)", async () => {
      const res = await s.api.get<Health>("/v1/health", { token: null });
      expect(res.status).toBe(200);
    });

    // The spec declares an auth-less listener (`security: [{bearerAuth: []}, {}]`), so Prism
    // serves a request without Authorization; one that is not a bearer token is 401.
    it.runIf(isPrism)("declared bearer auth: an Authorization that is not a bearer token → 401 UNAUTHORIZED (mock only: the servers under test run without auth)", async () => {
      for (const [method, path, json] of [
        ["GET", "/v1/health", undefined],
        ["GET", "/v1/runs", undefined],
        ["POST", "/v1/runs", { file: "x.yaml" }],
      ] as const) {
        const res = await s.api.request(method, path, { token: null, json, headers: { authorization: "Basic dm9pZDpib3g=" } });
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(errorOf(res).code).toBe("UNAUTHORIZED");
        expect(errorOf(res).retryable).toBe(false);
        expect((await s.api.request(method, path, { token: null, json })).status, `${method} ${path} without Authorization`).toBe(200);
      }
    });

    it("unknown route → 404 NOT_FOUND (R1 on Prism: status only)", async () => {
      const routes: Array<[string, string]> = [
        ["GET", "/v1/nope"],
        ["GET", "/v2/runs"],
        ["GET", "/"],
        ["POST", "/v1/health/extra"],
      ];
      if (!isPrism) routes.push(["DELETE", "/v1/runs"], ["PUT", "/v1/health"]);
      for (const [method, path] of routes) {
        const res = await s.api.request(method, path);
        expect(res.status, `${method} ${path}`).toBe(404);
        if (!isPrism) {
          expect(errorOf(res).code).toBe("NOT_FOUND");
          expect(errorOf(res).retryable).toBe(false);
          expect(errorOf(res).message).toMatch(/not found/i);
        }
      }
    });

    it("unknown query parameters are ignored", async () => {
      expect((await s.api.get<Health>("/v1/health", { query: { verbose: "1", x: "y" } })).status).toBe(200);
      expect((await s.api.get<RunList>("/v1/runs", { query: { foo: "bar", limit: "3", state: "active" } })).status).toBe(200);
      if (!isPrism) {
        const run = await helloRun();
        expect((await s.api.get<RunState>(`/v1/runs/${run.id}`, { query: { junk: "1", api_version: "v1" } })).status).toBe(200);
        expect((await s.api.get<RunEvent[]>(`/v1/runs/${run.id}/events`, { query: { page: "2" } })).status).toBe(200);
        expect((await s.api.get<StageList>(`/v1/runs/${run.id}/stages`, { query: { x: "1" } })).status).toBe(200);
      }
    });

    it("raw-socket client with Connection: close reads to EOF and gets Content-Length", async () => {
      const host = new URL(s.target.url).host;
      const health = await rawHttp(
        s.target.url,
        `GET /v1/health HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${s.api.token}\r\nConnection: close\r\n\r\n`,
      );
      expect(health.status).toBe(200);
      expect(health.headers["content-length"]).toBeDefined();
      expect(health.headers["transfer-encoding"]).toBeUndefined();
      expect(health.body.length).toBe(Number(health.headers["content-length"]));
      expect(validateResponse("getHealth", 200, JSON.parse(health.body.toString("utf8")))).toEqual([]);

      const body = JSON.stringify(runRequest(s.fx, { file: isPrism ? "examples/hello.yaml" : s.fx.hello }));
      const created = await rawHttp(
        s.target.url,
        `POST /v1/runs HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${s.api.token}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      expect(created.status).toBe(200);
      expect(created.body.length).toBe(Number(created.headers["content-length"]));
      expect(validateResponse("createRun", 200, JSON.parse(created.body.toString("utf8")))).toEqual([]);

      if (!isPrism) {
        const missing = await rawHttp(
          s.target.url,
          `GET /v1/runs/no-such-run HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${s.api.token}\r\nConnection: close\r\n\r\n`,
        );
        expect(missing.status).toBe(404);
        expect(missing.body.length).toBe(Number(missing.headers["content-length"]));
        expect(validateResponse("getRun", 404, JSON.parse(missing.body.toString("utf8")))).toEqual([]);
      }
    });

    it.skipIf(isPrism)("body over 4 MiB → 413 PAYLOAD_TOO_LARGE as a JSON ApiError (R5)", async () => {
      const pad = "a".repeat(4 * 1024 * 1024 + 1024);
      const big = await create({ file: s.fx.hello, pad });
      expect(big.status).toBe(413);
      expect(errorOf(big).code).toBe("PAYLOAD_TOO_LARGE");
      expect(errorOf(big).retryable).toBe(false);

      const msg = await s.api.post<SessionMessage>("/v1/sessions/big-session/messages", { json: { role: "user", content: pad } });
      expect(msg.status).toBe(413);
      expect(errorOf(msg).code).toBe("PAYLOAD_TOO_LARGE");
    });
  });

  // ── bearer auth on TCP (in-process only: the shared targets run without auth) ─
  it.runIf(factory.kind === "inprocess")("TCP with a token: missing/wrong token → 401 UNAUTHORIZED on every route, health included (in-process only: starts its own daemon)", async () => {
    const dir = makeStateDir();
    const token = "0123456789abcdef".repeat(4);
    const { d: secured, url } = await startDaemon(dir, { auth: { token }, vm: undefined });
    try {
      const client = new ApiClient(url.replace(/\/$/, ""), "inprocess");
      const routes: Array<[string, string, unknown?]> = [
        ["GET", "/v1/health"],
        ["GET", "/v1/runs"],
        ["POST", "/v1/runs", { file: s.fx.hello }],
        ["GET", "/v1/runs/some-run"],
        ["GET", "/v1/runs/some-run/events"],
        ["POST", "/v1/runs/some-run/cancel"],
        ["GET", "/v1/runs/some-run/stages"],
        ["GET", "/v1/sessions/s1/messages"],
      ];
      for (const [method, path, json] of routes) {
        for (const bad of [null, "wrong-token", token.slice(0, -1), token + "0"]) {
          const res = await client.request(method, path, { json, token: bad });
          expect(res.status, `${method} ${path} with token ${JSON.stringify(bad)}`).toBe(401);
          expect(errorOf(res).code).toBe("UNAUTHORIZED");
        }
      }
      expect((await client.get<Health>("/v1/health", { token })).status).toBe(200);
      expect((await client.get<RunList>("/v1/runs", { token })).status).toBe(200);
    } finally {
      await secured.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // ── state dir is a parameter, daemons never share ───────────────────────────
  it.runIf(factory.kind === "inprocess")("two daemons with their own state dirs do not see each other's runs (in-process only: starts its own daemon)", async () => {
    const otherDir = makeStateDir();
    const { d: other, url } = await startDaemon(otherDir, { auth: null, vm: undefined });
    try {
      const otherApi = new ApiClient(url.replace(/\/$/, ""), "inprocess");
      const id = uniqueRunId("iso");
      expect((await otherApi.post<CreateRunResponse>("/v1/runs", { json: { file: s.fx.hello, run_id: id } })).status).toBe(200);
      await waitForTerminal(otherApi, id);
      expect((await s.api.get<RunState>(`/v1/runs/${id}`)).status).toBe(404);
      const mine = (await s.api.get<{ runs: RunState[] }>("/v1/runs")).body.runs.map((r) => r.id);
      expect(mine).not.toContain(id);
    } finally {
      await other.close();
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});

// Sanity of the validator itself (independent of any target): undeclared statuses fail.
describe("openapi validator", () => {
  it("rejects an undeclared status and a non-conforming body", () => {
    expect(validateResponse("getRun", 500, { code: "INTERNAL_ERROR", message: "x", retryable: true })).not.toEqual([]);
    expect(validateResponse("getHealth", 200, { status: "ok" })).not.toEqual([]);
    expect(validateResponse("getHealth", 200, { status: "ok", persistence: "json", accelerator: null })).toEqual([]);
    expect(validateSchema("ApiError", { code: "NOPE", message: "x", retryable: false })).not.toEqual([]);
  });
});
