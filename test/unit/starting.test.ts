// A listener bound during start-up answers GET /v1/health at once and holds every other
// request until the API is ready (src/http/starting.ts), for the Unix socket and TCP.
import http from "node:http";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startingHandler, type RequestHandler } from "../../src/http/starting.js";
import { createDaemon, type Daemon } from "../../src/server.js";
import { gateReply } from "../helpers/conformance.js";
import { tmpDir } from "../helpers/daemon.js";
import { waitFor } from "../helpers/wait.js";

interface Got {
  status: number;
  json: unknown;
}
type Raw = Got & { headers: http.IncomingHttpHeaders; body: Buffer };

async function request(target: { port?: number; socketPath?: string }, method: string, p: string, headers: Record<string, string> = {}): Promise<Got> {
  const { status, json } = await rawRequest(target, method, p, headers);
  return { status, json };
}

function rawRequest(target: { port?: number; socketPath?: string }, method: string, p: string, headers: Record<string, string> = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", ...target, method, path: p, headers, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, json: JSON.parse(body.toString() || "null"), headers: res.headers, body });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${p}: no reply`)));
    req.on("error", reject);
    req.end();
  });
}

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A server whose handler is startingHandler(); `ready` is resolved or rejected by the test. */
async function starting(token: string | null) {
  let resolveReady!: (h: RequestHandler) => void;
  let rejectReady!: (e: unknown) => void;
  const ready = new Promise<RequestHandler>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
  const counted: string[] = [];
  const handler = startingHandler({ health: () => ({ status: "ok", persistence: "json-files" }), token, ready, onRequest: (route, method, status) => counted.push(`${method} ${route} ${status}`) });
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const arrived = (n: number) =>
    new Promise<void>((r) => {
      let seen = 0;
      server.on("request", () => ++seen === n && r());
    });
  return { port: (server.address() as { port: number }).port, resolveReady, rejectReady, counted, arrived, server };
}

describe("startingHandler", () => {
  it("answers health before the API is ready and holds other requests until it is", async () => {
    const s = await starting(null);
    const order: string[] = [];
    const health = await request(s, "GET", "/v1/health/");
    expect(health).toEqual({ status: 200, json: { status: "ok", persistence: "json-files" } });
    expect(s.counted).toEqual(["GET /v1/health 200"]);

    const held = s.arrived(1);
    const list = request(s, "GET", "/v1/runs");
    await held; // the request has reached the handler and is not answered
    order.push("ready");
    s.resolveReady((req, res) => {
      order.push(`api ${req.method} ${req.url}`);
      res.writeHead(200, { "content-type": "application/json" }).end('{"runs":[]}');
    });
    expect(await list).toEqual({ status: 200, json: { runs: [] } });
    expect(order).toEqual(["ready", "api GET /v1/runs"]);
    // Once ready, health is the API's too.
    expect((await request(s, "GET", "/v1/health")).json).toEqual({ runs: [] });
  });

  it("checks the bearer token on health like every route", async () => {
    const s = await starting("s3cret");
    const denied = await request(s, "GET", "/v1/health");
    expect(denied.status).toBe(401);
    expect(denied.json).toMatchObject({ code: "UNAUTHORIZED", retryable: false });
    expect((await request(s, "GET", "/v1/health", { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await request(s, "GET", "/v1/health", { authorization: "Bearer s3cret" })).status).toBe(200);
    expect(s.counted).toEqual(["GET /v1/health 401", "GET /v1/health 401", "GET /v1/health 200"]);
  });

  it("answers held requests with an ApiError when start-up fails", async () => {
    const s = await starting(null);
    const held = s.arrived(1);
    const create = request(s, "POST", "/v1/runs");
    await held;
    s.rejectReady(new Error("openapi-backend failed"));
    const r = await create;
    expect(r.status).toBe(500);
    expect(r.json).toMatchObject({ code: "INTERNAL_ERROR", retryable: true });
  });
});

describe("createDaemon({ listen })", () => {
  let daemon: Daemon | undefined;
  afterEach(async () => {
    await daemon?.close();
    daemon = undefined;
  });

  it("binds the listeners during start-up; health answered there conforms to openapi.yaml, and the API serves once started", async () => {
    const dir = tmpDir("vbx-starting-");
    const socketPath = path.join(dir, "d.sock");
    const started = createDaemon({ stateDir: path.join(dir, "state"), vm: false, listen: [`unix://${socketPath}`] });
    // Polled from the first moment: whichever handler answers, the reply is the health document.
    const first: Raw = await waitFor(() => rawRequest({ socketPath }, "GET", "/v1/health").catch(() => undefined), "a health reply after start", 20_000);
    gateReply({ method: "GET", path: "/v1/health", status: first.status, headers: first.headers, body: first.body });
    expect(first.json).toMatchObject({ status: "ok", persistence: "json-files", sandbox_modes: ["mock", "auto"] });
    daemon = await started;
    expect((await request({ socketPath }, "GET", "/v1/runs")).json).toEqual({ runs: [] });
  });

  it("a listen URL that cannot be bound fails start-up and releases the state dir", async () => {
    const dir = tmpDir("vbx-starting-");
    const stateDir = path.join(dir, "state");
    await expect(createDaemon({ stateDir, vm: false, listen: [`unix://${dir}/missing-dir/d.sock`] })).rejects.toThrow();
    daemon = await createDaemon({ stateDir, vm: false }); // the lock was released
  });
});
