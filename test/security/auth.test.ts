// Bearer-token authentication on TCP listeners (README "Using the daemon"; openapi.yaml securitySchemes): every route of
// openapi.yaml, health included, needs `Authorization: Bearer <token>`; token sources
// and the refusal of group/other-readable token files; --no-auth is loud.
import fs from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { childEnv, killHard, REPO_ROOT, spawnDaemon, startDaemonProcess, stopDaemon, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { isApiError, request } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { TERMINAL } from "../helpers/runs.js";
import { writeSpec, programWorkflow } from "../helpers/specs.js";
import { waitFor, withTimeout } from "../helpers/wait.js";

const TOKEN = "s3cret-" + "a1b2c3d4".repeat(6);
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function home(): string {
  const h = tmpDir("vbx-auth-");
  dirs.push(h);
  fs.mkdirSync(path.join(h, "run"));
  return h;
}

function tokenFile(dir: string, token: string, mode: number): string {
  const f = path.join(dir, `token-${mode.toString(8)}`);
  fs.writeFileSync(f, token + "\n");
  fs.chmodSync(f, mode);
  return f;
}

/** Every (method, path) pair of openapi.yaml. */
function operations(): Array<{ method: string; path: string; operationId: string }> {
  const doc = parseYaml(fs.readFileSync(path.join(REPO_ROOT, "openapi.yaml"), "utf8"), { maxAliasCount: -1 }) as {
    paths: Record<string, Record<string, { operationId?: string }>>;
  };
  const out: Array<{ method: string; path: string; operationId: string }> = [];
  for (const [p, item] of Object.entries(doc.paths))
    for (const [m, op] of Object.entries(item))
      if (["get", "post", "put", "patch", "delete"].includes(m)) out.push({ method: m.toUpperCase(), path: p, operationId: op.operationId ?? `${m} ${p}` });
  return out;
}

describe("TCP listener with a token file", () => {
  let d: DaemonProc;
  let url: string;
  let unixUrl: string;
  let h: string;
  let shortSpec: string;
  const ops = operations();

  beforeAll(async () => {
    h = home();
    const tf = tokenFile(h, TOKEN, 0o600);
    shortSpec = writeSpec(h, programWorkflow("short.yaml", [
      { name: "say", program: "echo", args: ["hi"] },
      { name: "shout", program: "tr", args: ["a-z", "A-Z"], depends_on: ["say"] },
    ]), "short.yaml");
    d = await startDaemonProcess({
      args: ["--listen", "tcp://127.0.0.1:0", "--listen", `unix://${path.join(h, "run", "a.sock")}`, "--state-dir", path.join(h, "state"), "--token-file", tf, "--accel", "tcg"],
      env: childEnv(h),
      listeners: 2,
    });
    url = d.urls.find((u) => u.startsWith("http://"))!;
    unixUrl = d.urls.find((u) => u.startsWith("unix://"))!;
    // A real run so that every {run_id} route addresses something that exists.
    const c = sdk(url, { token: TOKEN });
    const created = await c.api.POST("/v1/runs", { body: { file: shortSpec, run_id: "known-run" } });
    expect(created.response.status, JSON.stringify(created.error)).toBe(200);
    await waitFor(
      async () => TERMINAL.has((await c.getRun("known-run")).status),
      "known-run did not finish",
      15_000,
    );
  }, 60_000);
  afterAll(async () => {
    if (d) await stopDaemon(d);
  });

  it("the yaml lists the routes the daemon serves", () => {
    expect(ops.length).toBeGreaterThanOrEqual(11);
  });

  let n = 0;
  const fill = (p: string) =>
    p.replace("{run_id}", "known-run").replace("{stage}", "main").replace("{name}", "result.json").replace("{session_id}", "sess-1");
  const bodyFor = (operationId: string): unknown =>
    operationId === "createRun"
      ? { file: shortSpec, run_id: `auth-run-${n++}` }
      : operationId === "appendSessionMessage"
        ? { role: "user", content: "hello" }
        : operationId === "cancelRun"
          ? { reason: "auth test" }
          : undefined;

  const wrongAuth: Array<[string, Record<string, string>]> = [
    ["no Authorization header", {}],
    ["a wrong token", { authorization: "Bearer not-the-token" }],
    ["the token with an extra character", { authorization: `Bearer ${TOKEN}x` }],
    ["a prefix of the token", { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
    ["the token without the Bearer scheme", { authorization: TOKEN }],
    ["the token as Basic credentials", { authorization: `Basic ${Buffer.from(`user:${TOKEN}`).toString("base64")}` }],
    ["an empty Bearer", { authorization: "Bearer " }],
    ["the token in a query parameter", {}],
    ["the token in another header", { "x-api-key": TOKEN, cookie: `token=${TOKEN}` }],
  ];

  it("every route answers 401 UNAUTHORIZED without the right token", async () => {
    const failures: string[] = [];
    for (const op of ops) {
      for (const [what, headers] of wrongAuth) {
        const p = fill(op.path) + (what.includes("query") ? `?token=${TOKEN}&access_token=${TOKEN}` : "");
        const body = bodyFor(op.operationId);
        const r = await request(url, p, { method: op.method, body, headers });
        const ok = r.status === 401 && isApiError(r.json) && (r.json as { code: string }).code === "UNAUTHORIZED" && (r.json as { retryable: boolean }).retryable === false;
        if (!ok) failures.push(`${op.method} ${op.path} with ${what}: ${r.status} ${r.text.slice(0, 200)}`);
        if (r.status === 401) expect(r.headers["content-type"]).toMatch(/application\/json/);
      }
    }
    expect(failures).toEqual([]);
  }, 60_000);

  it("an unknown route also needs the token (401 before 404)", async () => {
    const r = await request(url, "/v1/nope");
    expect(r.status).toBe(401);
    expect(r.json).toMatchObject({ code: "UNAUTHORIZED", retryable: false });
    const r2 = await request(url, "/v1/nope", { token: TOKEN });
    expect(r2.status).toBe(404);
    expect(r2.json).toMatchObject({ code: "NOT_FOUND", retryable: false });
  });

  it("every route works with the right token (never 401)", async () => {
    const failures: string[] = [];
    // A drain ends the daemon these tests share: with the token it is covered in test/fleet/drain.test.ts.
    for (const op of ops.filter((o) => o.operationId !== "drainNode")) {
      for (const auth of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`]) {
        const r = await request(url, fill(op.path), { method: op.method, body: bodyFor(op.operationId), headers: { authorization: auth } });
        if (r.status === 401 || r.status >= 500) failures.push(`${op.method} ${op.path} (${auth.split(" ")[0]}): ${r.status} ${r.text.slice(0, 200)}`);
      }
    }
    expect(failures).toEqual([]);
  }, 60_000);

  it("no state changed through unauthenticated requests", async () => {
    const c = sdk(url, { token: TOKEN });
    const ids = (await c.listRuns()).map((r) => r.id);
    // Only known-run and the creates sent with the right token exist.
    expect(ids.every((id) => id === "known-run" || /^auth-run-\d+$/.test(id))).toBe(true);
    expect(ids.length).toBe(1 + 2); // one createRun per accepted Authorization spelling
    expect(await c.listSessionMessages("sess-1")).toHaveLength(2);
  });

  it("the Unix socket listener of the same daemon needs no token", async () => {
    const r = await sdk(unixUrl).api.GET("/v1/health");
    expect(r.response.status).toBe(200);
  });
});

describe("token sources", () => {
  const procs: DaemonProc[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) await killHard(p).catch(() => undefined);
  });

  async function expectRefused(args: string[], env: NodeJS.ProcessEnv, mention: string): Promise<void> {
    const p = spawnDaemon({ args, env });
    procs.push(p);
    const exit = await withTimeout(p.exited, 30_000, `daemon did not exit\n${p.output()}`);
    expect(exit.code, p.output()).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(p.urls, "must not listen").toEqual([]);
    expect(p.stderr() + p.lines.map((l) => l.raw).join("\n")).toContain(mention);
  }

  it.each([
    ["0644", 0o644],
    ["0640", 0o640],
    ["0604", 0o604],
  ])("a token file with mode %s is refused with a message naming the file", async (_label, mode) => {
    const h = home();
    const tf = tokenFile(h, TOKEN, mode);
    await expectRefused(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--token-file", tf, "--accel", "tcg"], childEnv(h), tf);
  }, 60_000);

  it("a group-readable $VOIDBOX_DAEMON_TOKEN_FILE is refused too", async () => {
    const h = home();
    const tf = tokenFile(h, TOKEN, 0o644);
    await expectRefused(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--accel", "tcg"], childEnv(h, { VOIDBOX_DAEMON_TOKEN_FILE: tf }), tf);
  }, 60_000);

  it("a missing token file is refused with a message naming the file", async () => {
    const h = home();
    const tf = path.join(h, "does-not-exist");
    await expectRefused(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--token-file", tf, "--accel", "tcg"], childEnv(h), tf);
  }, 60_000);

  it("--no-auth logs a warning and serves TCP without a token", async () => {
    const h = home();
    const p = await startDaemonProcess({ args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--no-auth", "--accel", "tcg"], env: childEnv(h) });
    procs.push(p);
    const warn = p.lines.find((l) => l.rec && (l.rec.level as number) >= 40 && /no-auth/.test(String(l.rec.msg)));
    expect(warn, p.output()).toBeDefined();
    const r = await request(p.urls[0], "/v1/health");
    expect(r.status).toBe(200);
  }, 60_000);

  it("VOIDBOX_DAEMON_TOKEN in the child's env is the token", async () => {
    const h = home();
    const envToken = "env-token-" + "0f".repeat(16);
    const p = await startDaemonProcess({
      args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--accel", "tcg"],
      env: childEnv(h, { VOIDBOX_DAEMON_TOKEN: envToken }),
    });
    procs.push(p);
    expect((await request(p.urls[0], "/v1/health")).status).toBe(401);
    expect((await request(p.urls[0], "/v1/health", { token: "wrong" })).status).toBe(401);
    expect((await request(p.urls[0], "/v1/health", { token: envToken })).status).toBe(200);
    // No token file is generated when the env supplies the token.
    expect(fs.existsSync(path.join(h, "config", "voidbox", "daemon-token"))).toBe(false);
  }, 60_000);

  it("--token-file takes precedence over VOIDBOX_DAEMON_TOKEN", async () => {
    const h = home();
    const tf = tokenFile(h, TOKEN, 0o600);
    const p = await startDaemonProcess({
      args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--token-file", tf, "--accel", "tcg"],
      env: childEnv(h, { VOIDBOX_DAEMON_TOKEN: "the-env-token" }),
    });
    procs.push(p);
    expect((await request(p.urls[0], "/v1/health", { token: "the-env-token" })).status).toBe(401);
    expect((await request(p.urls[0], "/v1/health", { token: TOKEN })).status).toBe(200);
  }, 60_000);

  it("without any token source a 64-hex token is generated into $XDG_CONFIG_HOME/voidbox/daemon-token (0600)", async () => {
    const h = home();
    const p = await startDaemonProcess({ args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--accel", "tcg"], env: childEnv(h) });
    procs.push(p);
    const file = path.join(h, "config", "voidbox", "daemon-token");
    const st = fs.statSync(file);
    expect((st.mode & 0o777).toString(8)).toBe("600");
    const token = fs.readFileSync(file, "utf8").trim();
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    expect((await request(p.urls[0], "/v1/health")).status).toBe(401);
    expect((await request(p.urls[0], "/v1/health", { token })).status).toBe(200);
  }, 60_000);
});
