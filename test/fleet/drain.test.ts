/**
 * Drain: new runs are refused (503, the node is draining), active runs finish, then the
 * daemon closes — `voidbox serve` exits 0. Past --drain-timeout the rest fail durably
 * (daemon_shutdown). In-process with a fake sandbox for the rules; the built daemon
 * with one real micro-VM run, SIGUSR2 and `voidbox drain` for the process side.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { Daemon } from "../../src/server.js";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { pidAlive } from "../helpers/process.js";
import { FakeVms } from "./fake-vm.js";
import { childEnv, killHard, MAIN_JS, REPO_ROOT, startDaemon, startDaemonProcess, type DaemonProc, tmpDir } from "../helpers/daemon.js";
import { errorOf } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { withTimeout, waitFor } from "../helpers/wait.js";

const run = promisify(execFile);
const procs: DaemonProc[] = [];
const daemons: Daemon[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const d of procs.splice(0)) await killHard(d).catch(() => undefined);
  for (const d of daemons.splice(0)) await d.close();
});
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function home(): string {
  const dir = tmpDir("vbx-drain-");
  dirs.push(dir);
  fs.mkdirSync(path.join(dir, "run"));
  return dir;
}

const runFile = (stateDir: string, id: string) => JSON.parse(fs.readFileSync(path.join(stateDir, "runs", id, "run.json"), "utf8")) as { status: string; terminal_reason: string | null };

describe("drain (in process)", () => {
  it("refuses new runs, lets the active one finish, then resolves", async () => {
    const dir = home();
    const vms = new FakeVms();
    const { d, url } = await startDaemon(dir + "/state", { vm: vms.provider() });
    daemons.push(d);
    const spec = writeSpec(dir, { ...workflow("drained", [{ name: "work", run: { program: "sh", args: ["-c", "true"] } }]), sandbox: { mode: "local", memory_mb: 128 } });
    const c = sdk(url);
    const id = (await c.createRun({ file: spec })).run_id;
    await waitFor(() => vms.live.size === 1, "the run's VM");

    const drained = await c.api.POST("/v1/drain");
    expect(drained.response.status).toBe(202);
    expect(drained.data).toMatchObject({ draining: true, active_runs: 1 });
    let done = false;
    void d.drained.then(() => (done = true));

    const refused = await c.api.POST("/v1/runs", { body: { file: spec } });
    expect(refused.response.status).toBe(503);
    expect(refused.error).toMatchObject({ code: "RESOURCE_LIMIT_EXCEEDED", retryable: true });
    expect(errorOf(refused).message).toMatch(/draining/);
    const health = await c.health();
    expect(health.capacity).toMatchObject({ draining: true, accepts_runs: false, active_runs: 1 });
    expect((await c.api.POST("/v1/drain")).response.status).toBe(202); // idempotent
    expect(done).toBe(false);

    vms.finish(id);
    await withTimeout(d.drained, 20_000, "drain did not end after the last run");
    expect(runFile(dir + "/state", id)).toMatchObject({ status: "succeeded", terminal_reason: null });
    expect(vms.live.size).toBe(0);
  });

  it("fails the runs still active at the drain timeout (daemon_shutdown)", async () => {
    const dir = home();
    const vms = new FakeVms();
    const { d, url } = await startDaemon(dir + "/state", { vm: vms.provider(), limits: { drainTimeoutMs: 300 } });
    daemons.push(d);
    const spec = writeSpec(dir, { ...workflow("stuck", [{ name: "work", run: { program: "sh", args: ["-c", "true"] } }]), sandbox: { mode: "local", memory_mb: 128 } });
    const id = (await sdk(url).createRun({ file: spec })).run_id;
    await waitFor(() => vms.live.size === 1, "the run's VM");
    await withTimeout(d.drain(), 20_000, "drain did not end at its timeout");
    expect(runFile(dir + "/state", id)).toMatchObject({ status: "failed", terminal_reason: "daemon_shutdown" });
    expect(vms.live.size).toBe(0);
  });
});

describe("drain (the built daemon)", () => {
  const image = findGuestImage(REPO_ROOT);
  const vmReady = qemuAvailable() && image !== null;

  it.skipIf(!vmReady)("POST /v1/drain finishes an active micro-VM run, refuses new ones, and exits 0", async () => {
    const dir = home();
    const sock = path.join(dir, "run", "d.sock");
    const stateDir = path.join(dir, "state");
    const d = await startDaemonProcess({ args: ["--listen", `unix://${sock}`, "--state-dir", stateDir, "--accel", "tcg", "--log-level", "info"], env: childEnv(dir) });
    procs.push(d);
    const base = `unix://${sock}`;
    const spec = path.join(dir, "vm.yaml");
    fs.writeFileSync(
      spec,
      "api_version: v1\nkind: workflow\nname: drain-vm\nsandbox: {mode: local, memory_mb: 256}\nworkflow:\n  steps:\n    - name: slow\n      run: {program: sh, args: ['-c', 'sleep 3; echo finished-in-drain; echo {\\\"status\\\":\\\"ok\\\"} > /workspace/result.json']}\n",
    );
    const c = sdk(base);
    const created = await c.api.POST("/v1/runs", { body: { file: spec } });
    expect(created.response.status).toBe(200);
    const id = created.data!.run_id;
    let pid = 0;
    await waitFor(
      async () => {
        const spawned = (await c.listEvents(id)).find((e) => e.event_type === "microvm.spawned");
        pid = spawned?.event_type === "microvm.spawned" ? spawned.payload.pid : 0;
        return pid > 0;
      },
      () => `the micro-VM did not boot\n${d.output()}`,
      90_000,
    );

    const drain = await c.api.POST("/v1/drain");
    expect(drain.response.status).toBe(202);
    const refused = await c.api.POST("/v1/runs", { body: { file: spec } });
    expect(refused.response.status).toBe(503);
    expect(refused.error).toMatchObject({ code: "RESOURCE_LIMIT_EXCEEDED", retryable: true });
    const health = await c.health();
    expect(health.capacity).toMatchObject({ draining: true, vms_in_use: 1 });

    const exit = await withTimeout(d.exited, 120_000, `daemon did not exit after the drain\n${d.output()}`);
    expect(exit).toEqual({ code: 0, signal: null });
    const file = JSON.parse(fs.readFileSync(path.join(stateDir, "runs", id, "run.json"), "utf8")) as { status: string; error: string | null; report: { output: string } | null };
    expect(file.status, file.error ?? "").toBe("succeeded");
    expect(file.report?.output).toContain("finished-in-drain");
    expect(pidAlive(pid)).toBe(false);
    expect(fs.existsSync(sock)).toBe(false);
  }, 180_000);

  it("SIGUSR2 and `voidbox drain` drain an idle daemon, which exits 0", async () => {
    const dir = home();
    const viaSignal = await startDaemonProcess({ args: ["--listen", `unix://${path.join(dir, "run", "a.sock")}`, "--state-dir", path.join(dir, "a"), "--accel", "tcg"], env: childEnv(dir) });
    procs.push(viaSignal);
    const sock = path.join(dir, "run", "b.sock");
    const viaCli = await startDaemonProcess({ args: ["--listen", `unix://${sock}`, "--state-dir", path.join(dir, "b"), "--accel", "tcg"], env: childEnv(dir) });
    procs.push(viaCli);

    viaSignal.child.kill("SIGUSR2");
    expect(await withTimeout(viaSignal.exited, 30_000, `no exit after SIGUSR2\n${viaSignal.output()}`)).toEqual({ code: 0, signal: null });

    const cli = await run(process.execPath, [MAIN_JS, "drain", "--daemon", `unix://${sock}`], { env: childEnv(dir), timeout: 30_000 });
    expect(JSON.parse(cli.stdout)).toMatchObject({ draining: true, active_runs: 0 });
    expect(await withTimeout(viaCli.exited, 30_000, `no exit after voidbox drain\n${viaCli.output()}`)).toEqual({ code: 0, signal: null });
  });
});
