// Graceful shutdown and the Unix-socket listener (README "Using the daemon" and "Limits and faults"):
// SIGTERM/SIGINT with an active run exits 0, unlinks the socket and fails the run
// durably with terminal_reason "daemon_shutdown"; the socket is 0600; a stale socket
// is replaced; any other file at the socket path is left alone and refused.
import fs from "node:fs";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { childEnv, killHard, spawnDaemon, startDaemonProcess, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { TERMINAL } from "../helpers/runs.js";
import type { RunState } from "../helpers/types.js";
import { writeSpec, programWorkflow } from "../helpers/specs.js";
import { waitFor, withTimeout } from "../helpers/wait.js";

const procs: DaemonProc[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const d of procs.splice(0)) await killHard(d).catch(() => undefined);
});
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function setup() {
  const home = tmpDir("vbx-shut-");
  dirs.push(home);
  const stateDir = path.join(home, "state");
  fs.mkdirSync(path.join(home, "run"), { recursive: true });
  const specs = path.join(home, "specs");
  fs.mkdirSync(specs);
  return {
    home,
    stateDir,
    env: childEnv(home),
    sock: path.join(home, "run", "v.sock"),
    longSpec: writeSpec(specs, programWorkflow("long.yaml", [{ name: "wait", program: "sleep", args: ["300"] }]), "long.yaml"),
    // Two steps: a single-step workflow must publish result.json (openapi.yaml ArtifactPublication), echo does not.
    shortSpec: writeSpec(specs, programWorkflow("short.yaml", [
      { name: "say", program: "echo", args: ["hi"] },
      { name: "shout", program: "tr", args: ["a-z", "A-Z"], depends_on: ["say"] },
    ]), "short.yaml"),
  };
}

async function serveUnix(env: NodeJS.ProcessEnv, stateDir: string, sock: string): Promise<DaemonProc> {
  const d = await startDaemonProcess({ args: ["--listen", `unix://${sock}`, "--state-dir", stateDir, "--accel", "tcg"], env });
  procs.push(d);
  return d;
}

async function getRun(base: string, id: string): Promise<RunState> {
  const r = await sdk(base).api.GET("/v1/runs/{run_id}", { params: { path: { run_id: id } } });
  expect(r.response.status, JSON.stringify(r.error)).toBe(200);
  return r.data as RunState;
}

async function waitStatus(base: string, id: string, pred: (r: RunState) => boolean, ms = 15_000): Promise<RunState> {
  let last: RunState | undefined;
  await waitFor(
    async () => pred((last = await getRun(base, id))),
    () => `run ${id} did not reach the expected state: ${JSON.stringify(last)}`,
    ms,
  );
  return last!;
}

describe.each(["SIGTERM", "SIGINT"] as const)("graceful shutdown on %s", (signal) => {
  it("exits 0, unlinks the socket, fails the active run with daemon_shutdown and loses nothing", async () => {
    const s = setup();
    const d = await serveUnix(s.env, s.stateDir, s.sock);
    const url = d.urls[0];
    expect(url).toBe(`unix://${s.sock}`);

    // One finished run, one cancelled run, one run active in a long stage.
    const c = sdk(url);
    await c.createRun({ file: s.shortSpec, run_id: "done-1" });
    const done = await waitStatus(url, "done-1", (r) => TERMINAL.has(r.status));
    expect(done.status).toBe("succeeded");
    await c.createRun({ file: s.longSpec, run_id: "cancelled-1" });
    const cancel = await c.api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: "cancelled-1" } } });
    expect(cancel.response.status).toBe(200);
    const cancelled = await getRun(url, "cancelled-1");
    const created = await c.api.POST("/v1/runs", { body: { file: s.longSpec, run_id: "long-1" } });
    expect(created.response.status, JSON.stringify(created.error)).toBe(200);
    await waitStatus(url, "long-1", (r) => r.events.some((e) => e.event_type === "stage.started"));

    d.child.kill(signal);
    const exit = await withTimeout(d.exited, 25_000, `daemon did not exit within 25 s of ${signal}\n${d.output()}`);
    expect(exit, d.output()).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(s.sock), "socket file must be unlinked on shutdown").toBe(false);
    expect(d.lines.some((l) => l.rec?.msg === "shutting down"), d.output()).toBe(true);

    // On disk already (before any restart): the active run is failed, durably.
    const onDisk = JSON.parse(fs.readFileSync(path.join(s.stateDir, "runs", "long-1", "run.json"), "utf8")) as RunState;
    expect(onDisk.status).toBe("failed");
    expect(onDisk.terminal_reason).toBe("daemon_shutdown");

    const d2 = await serveUnix(s.env, s.stateDir, s.sock);
    const url2 = d2.urls[0];
    const long = await getRun(url2, "long-1");
    expect(long.status).toBe("failed");
    expect(long.terminal_reason).toBe("daemon_shutdown");
    expect(typeof long.error === "string" && long.error.length > 0).toBe(true);
    const last = long.events[long.events.length - 1];
    expect(last.event_type).toBe("run.failed");
    expect(long.terminal_event_id).toBe(last.event_id);
    expect(long.events.map((e) => e.seq)).toEqual(long.events.map((_, i) => i));
    // ... and a restart does not fail it a second time.
    expect(long.events.filter((e) => e.event_type === "run.failed")).toHaveLength(1);

    const done2 = await getRun(url2, "done-1");
    expect([done2.status, done2.terminal_event_id]).toEqual([done.status, done.terminal_event_id]);
    const cancelled2 = await getRun(url2, "cancelled-1");
    expect([cancelled2.status, cancelled2.terminal_event_id]).toEqual(["cancelled", cancelled.terminal_event_id]);

    const list = await sdk(url2).listRuns();
    expect(list.map((r) => r.id).sort()).toEqual(["cancelled-1", "done-1", "long-1"]);
    const health = await sdk(url2).health();
    expect(health.quarantined_files).toEqual([]);
  }, 90_000);
});

describe("Unix socket listener", () => {
  it("creates the socket with mode 0600 and serves without a token", async () => {
    const s = setup();
    const d = await serveUnix(s.env, s.stateDir, s.sock);
    const st = fs.lstatSync(s.sock);
    expect(st.isSocket()).toBe(true);
    expect((st.mode & 0o777).toString(8)).toBe("600");
    const h = await sdk(d.urls[0]).api.GET("/v1/health");
    expect(h.response.status).toBe(200);
  }, 60_000);

  it("replaces a stale socket left by a killed daemon", async () => {
    const s = setup();
    const d = await serveUnix(s.env, s.stateDir, s.sock);
    await killHard(d);
    expect(fs.lstatSync(s.sock).isSocket(), "kill -9 leaves the socket file behind").toBe(true);
    const d2 = await serveUnix(s.env, s.stateDir, s.sock);
    const h = await sdk(d2.urls[0]).api.GET("/v1/health");
    expect(h.response.status).toBe(200);
    expect((fs.lstatSync(s.sock).mode & 0o777).toString(8)).toBe("600");
  }, 60_000);

  it("refuses a socket path held by a live daemon and leaves that daemon alone", async () => {
    const s = setup();
    const d = await serveUnix(s.env, s.stateDir, s.sock);
    const other = spawnDaemon({ args: ["--listen", `unix://${s.sock}`, "--state-dir", path.join(s.home, "state2"), "--accel", "tcg"], env: s.env });
    procs.push(other);
    const exit = await withTimeout(other.exited, 30_000, `second daemon did not exit\n${other.output()}`);
    expect(exit.code, other.output()).not.toBe(0);
    expect(other.urls).toEqual([]);
    expect(other.stderr()).toContain(s.sock);
    const h = await sdk(d.urls[0]).api.GET("/v1/health");
    expect(h.response.status).toBe(200);
  }, 60_000);

  it("does not delete a regular file at the socket path and refuses to start", async () => {
    const s = setup();
    fs.writeFileSync(s.sock, "precious data\n");
    const d = spawnDaemon({ args: ["--listen", `unix://${s.sock}`, "--state-dir", s.stateDir, "--accel", "tcg"], env: s.env });
    procs.push(d);
    const exit = await withTimeout(d.exited, 30_000, `daemon did not exit\n${d.output()}`);
    expect(exit.code, d.output()).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(d.urls).toEqual([]);
    expect(fs.readFileSync(s.sock, "utf8")).toBe("precious data\n");
    const message = d.stderr() + d.lines.map((l) => l.raw).join("\n");
    expect(message).toContain(s.sock);
    expect(message).toMatch(/not a socket/i);
  }, 60_000);

  it("does not delete a directory at the socket path and refuses to start", async () => {
    const s = setup();
    fs.mkdirSync(s.sock);
    fs.writeFileSync(path.join(s.sock, "keep"), "x");
    const d = spawnDaemon({ args: ["--listen", `unix://${s.sock}`, "--state-dir", s.stateDir, "--accel", "tcg"], env: s.env });
    procs.push(d);
    const exit = await withTimeout(d.exited, 30_000, `daemon did not exit\n${d.output()}`);
    expect(exit.code, d.output()).not.toBe(0);
    expect(fs.existsSync(path.join(s.sock, "keep"))).toBe(true);
    expect(d.stderr() + d.lines.map((l) => l.raw).join("\n")).toContain(s.sock);
  }, 60_000);
});
