/**
 * kill -9 of the daemon while a micro-VM stage runs: the next daemon on the same state
 * dir fails the run (daemon_restarted) and leaves no QEMU process of the dead daemon
 * behind (pid files under the state dir, checked to be our QEMU, then killed).
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { pidAlive } from "../helpers/process.js";
import { childEnv, killHard, REPO_ROOT, startDaemonProcess, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { waitFor } from "../helpers/wait.js";

const ready = qemuAvailable() && findGuestImage(REPO_ROOT) !== null;
const daemons: DaemonProc[] = [];
const dirs: string[] = [];


afterAll(async () => {
  for (const d of daemons) await killHard(d);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe.skipIf(!ready)("daemon crash with a micro-VM running", () => {
  it("the restarted daemon kills the dead daemon's VM and fails the run", async () => {
    const dir = tmpDir("vbx-e2e-restart-");
    dirs.push(dir);
    const state = path.join(dir, "state");
    const spec = path.join(dir, "nap.yaml");
    fs.writeFileSync(
      spec,
      "api_version: v1\nkind: workflow\nname: nap\nsandbox: {mode: local, memory_mb: 256}\nworkflow:\n  steps:\n    - name: nap\n      run: {program: sleep, args: [\"300\"]}\n",
    );
    // No warm pool: the one pid file is the stage's VM (test/e2e/warm-pool.test.ts covers pool VMs).
    const args = ["--listen", "tcp://127.0.0.1:0", "--state-dir", state, "--no-auth", "--warm-pool", "0"];
    const first = await startDaemonProcess({ args, env: childEnv(dir) });
    daemons.push(first);
    const created = await sdk(first.urls[0]).api.POST("/v1/runs", { body: { file: spec, run_id: "crashy" } });
    expect(created.response.status).toBe(200);

    let vmPid = 0;
    await waitFor(
      async () => {
        const spawned = (await sdk(first.urls[0]).listEvents("crashy")).find((e) => e.event_type === "microvm.spawned");
        vmPid = spawned?.event_type === "microvm.spawned" ? spawned.payload.pid : 0;
        return vmPid > 0;
      },
      "microvm.spawned",
      90_000,
    );
    expect(fs.readdirSync(path.join(state, "vms")).length).toBe(1);
    await killHard(first);

    const second = await startDaemonProcess({ args, env: childEnv(dir) });
    daemons.push(second);
    await waitFor(() => !pidAlive(vmPid), `QEMU pid ${vmPid} of the dead daemon is still alive`, 15_000);
    expect(fs.readdirSync(path.join(state, "vms"))).toEqual([]);
    const run = await sdk(second.urls[0]).getRun("crashy");
    expect(run.status).toBe("failed");
    expect(run.terminal_reason).toBe("daemon_restarted");
    const again = await sdk(second.urls[0]).api.POST("/v1/runs", { body: { file: spec, run_id: "crashy" } });
    expect(again.response.status).toBe(409);
    await killHard(second);
  }, 180_000);
});
