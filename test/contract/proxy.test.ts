// A second, independent reply validator in front of the real daemon: Prism's proxy with
// `--errors` answers any reply the spec does not allow with its own 500 VIOLATIONS, and any
// request the declared security does not allow with its own 401. Through it, a client must
// see exactly what it sees talking to the daemon directly — including for the requests the
// spec lets the daemon answer leniently (no token on an auth-less listener) and the invalid
// inputs it answers with ApiErrors. Prism's request-shape validation is off
// (`--validate-request=false`): an invalid body must reach the daemon, whose ApiError is the
// contract, rather than be answered with Prism's own 422. What no spec can change: Prism's
// HTTP layer answers a body that is not JSON itself.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, errorOf } from "../helpers/http.js";
import { writeFixtures, waitForTerminal, type Fixtures } from "../helpers/runs.js";
import { startInProcess, startPrismProxy, type Target } from "../helpers/targets.js";
import { request } from "../helpers/http.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import type { CreateRunResponse, RunState } from "../helpers/types.js";

let daemon: Target;
let proxy: Target;
let direct: ApiClient;
let fx: Fixtures;

beforeAll(async () => {
  fx = writeFixtures();
  daemon = await startInProcess();
  proxy = await startPrismProxy(daemon.url, ["--validate-request=false"]);
  direct = ApiClient.for(daemon);
});

afterAll(async () => {
  await proxy?.close();
  await daemon?.close();
  fx?.cleanup();
});

interface Seen {
  status: number;
  contentType: string;
  body: unknown;
}

/** The same request directly (through the gate) and through the proxy; both replies as a client sees them. */
async function both(method: string, path: string, init: { json?: unknown; raw?: string; token?: null; headers?: Record<string, string> } = {}): Promise<[Seen, Seen]> {
  const res = await direct.request(method, path, { token: null, ...init });
  const body = init.json !== undefined ? JSON.stringify(init.json) : init.raw;
  const viaProxy = await fetch(proxy.url + path, {
    method,
    body,
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...init.headers },
  });
  const bytes = Buffer.from(await viaProxy.arrayBuffer());
  // Prism lists every request/reply violation it found (warnings included) in this header.
  expect(viaProxy.headers.get("sl-violations"), `${method} ${path}: Prism's violations`).toBeNull();
  const seen = (status: number, contentType: string, b: Buffer): Seen => ({
    status,
    contentType: contentType.split(";")[0]!,
    body: /json/.test(contentType) ? JSON.parse(b.toString("utf8")) : b.toString("utf8"),
  });
  return [seen(res.status, res.contentType, res.bytes), seen(viaProxy.status, viaProxy.headers.get("content-type") ?? "", bytes)];
}

describe("through Prism's validating proxy (--errors), a client sees what the daemon answers", () => {
  it("no Authorization on an auth-less daemon: served (the spec declares the auth-less alternative)", async () => {
    const [d, p] = await both("GET", "/v1/health");
    expect(d.status).toBe(200);
    expect(p).toEqual(d);
  });

  it("a run, its events and stages: identical", async () => {
    const created = await direct.post<CreateRunResponse>("/v1/runs", { json: { file: fx.hello } });
    const run = await waitForTerminal(direct, created.body.run_id);
    for (const path of [`/v1/runs/${run.id}`, `/v1/runs/${run.id}/events?api_version=v2`, `/v1/runs/${run.id}/stages`, "/v1/runs?state=terminal"]) {
      const [d, p] = await both("GET", path);
      expect(d.status, path).toBe(200);
      expect(p, path).toEqual(d);
    }
  });

  it("an artifact with its own media type, and one without: identical bytes and Content-Type", async () => {
    const dir = fx.dir;
    const result = JSON.stringify({ status: "ok", artifacts: [{ name: "notes.md", media_type: "text/markdown" }, { name: "blob" }] });
    const heredoc = (path: string, text: string) => `cat > ${path} <<EOF\n${text}\nEOF`;
    const script = [heredoc("/workspace/result.json", result), heredoc("/workspace/notes.md", "# notes"), heredoc("/workspace/blob", "raw")].join("\n");
    const file = writeSpec(dir, workflow("arts", [{ name: "make", run: { program: "sh", args: ["-c", script] } }]));
    const created = await direct.post<CreateRunResponse>("/v1/runs", { json: { file } });
    const run = await waitForTerminal(direct, created.body.run_id);
    expect(run.status, run.error ?? "").toBe("succeeded");
    const [md, mdProxy] = await both("GET", `/v1/runs/${run.id}/stages/make/artifacts/notes.md`);
    expect(md).toEqual({ status: 200, contentType: "text/markdown", body: "# notes\n" });
    expect(mdProxy).toEqual(md);
    const [blob, blobProxy] = await both("GET", `/v1/runs/${run.id}/stages/make/artifacts/blob`);
    expect(blob).toEqual({ status: 200, contentType: "application/octet-stream", body: "raw\n" });
    expect(blobProxy).toEqual(blob);
    const [out, outProxy] = await both("GET", `/v1/runs/${run.id}/stages/make/output-file`);
    expect(out.status).toBe(200);
    expect(outProxy).toEqual(out);
  });

  it.each([
    ["an unknown run", "GET", "/v1/runs/no-such-run", undefined, 404, "NOT_FOUND"],
    ["an unsafe run id", "GET", "/v1/runs/a..b/events", undefined, 400, "INVALID_PARAMS"],
    ["a `state` filter over its maxLength", "GET", `/v1/runs?state=${"x".repeat(100)}`, undefined, 400, "INVALID_PARAMS"],
    ["a policy value the spec forbids", "POST", "/v1/runs", { file: "x.yaml", policy: { max_parallel_microvms_per_run: 0 } }, 400, "INVALID_POLICY"],
    ["an unknown policy key", "POST", "/v1/runs", { file: "x.yaml", policy: { turbo: true } }, 400, "INVALID_POLICY"],
    ["a body without `file`", "POST", "/v1/runs", {}, 400, "INVALID_SPEC"],
    ["a message without a role", "POST", "/v1/sessions/s1/messages", { content: "x" }, 400, "INVALID_SPEC"],
  ] as const)("%s: the daemon's declared ApiError, unchanged", async (_label, method, path, json, status, code) => {
    const [d, p] = await both(method, path, { json });
    expect(d.status).toBe(status);
    expect((d.body as { code: string }).code).toBe(code);
    expect(p).toEqual(d);
  });

  it("malformed JSON: a 400 either way, but Prism's HTTP layer answers it before any validation (its own body)", async () => {
    // Prism parses every JSON body first and answers {"error":{"code":"invalid_json"}} itself:
    // no spec can change that; the contract suite's relaxation R2 says the same of the mock.
    const [d, p] = await both("POST", "/v1/runs", { raw: '{"file": ' });
    expect(d.status).toBe(400);
    expect((d.body as { code: string }).code).toBe("INVALID_SPEC");
    expect(p.status).toBe(d.status);
  });

  it("an Authorization that is not a bearer token: Prism's 401 (the spec allows only a bearer token or none)", async () => {
    const res = await fetch(proxy.url + "/v1/health", { headers: { authorization: "Basic dm9pZDpib3g=" } });
    await res.arrayBuffer();
    expect(res.status).toBe(401);
  });
});

describe("what the gate holds the daemon to beyond the proxy", () => {
  it("a body sent to an operation that takes none is not read: no 413 or 400 its spec entry does not declare", async () => {
    // Bodies used to be read (and capped, and parsed) on every route: a GET with 5 MiB got 413, one with "{" 400.
    const big = Buffer.alloc(5 * 1024 * 1024, "a");
    for (const [body, what] of [[big, "5 MiB"], [Buffer.from("{"), "malformed JSON"]] as const) {
      expect((await request(daemon.url, "/v1/health", { method: "GET", body, raw: true })).status, `health with ${what}`).toBe(200);
      expect((await request(daemon.url, "/v1/runs/no-such-run", { method: "GET", body, raw: true })).status, `getRun with ${what}`).toBe(404);
      expect((await request(daemon.url, "/v1/nope", { method: "POST", body, raw: true })).status, `unknown route with ${what}`).toBe(404);
    }
    // An operation that takes a body still caps it.
    const capped = await request(daemon.url, "/v1/runs", { method: "POST", body: big, raw: true });
    expect(capped.status).toBe(413);
  });

  it("a path that is no route is 404 NOT_FOUND, even when it is not valid percent-encoding", async () => {
    for (const path of ["/v1/health%ZZ", "/v1/nope%E0%A4%A"]) {
      const res = await direct.get(path);
      expect(res.status, path).toBe(404);
      expect(errorOf(res).code, path).toBe("NOT_FOUND");
    }
    // On a route, the bad encoding is the parameter's problem.
    const bad = await direct.get<RunState>("/v1/runs/%ZZ");
    expect(bad.status).toBe(400);
    expect(errorOf(bad).code).toBe("INVALID_PARAMS");
  });
});
