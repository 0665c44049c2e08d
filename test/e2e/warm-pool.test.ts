/**
 * The warm pool with real QEMU: a stage takes a pre-booted guest and runs in it; no
 * pool VM outlives the daemon, whether it shuts down (SIGTERM) or is killed (-9: the
 * parent-death signal takes the VMs with it, and the next daemon clears their pid files).
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { pidAlive } from "../helpers/process.js";
import { childEnv, killHard, REPO_ROOT, startDaemonProcess, stopDaemon, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import type { components, RunState } from "@voidbox/client";
import { sdk } from "../helpers/sdk.js";
import { waitFor } from "../helpers/wait.js";

const image = qemuAvailable() ? findGuestImage(REPO_ROOT) : null;
const daemons: DaemonProc[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const d of daemons) await killHard(d);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

type MicroVmSpawnedPayload = components["schemas"]["MicroVmSpawnedPayload"];

async function pool(url: string) {
  return (await sdk(url).health()).capacity?.warm_pool ?? undefined;
}

/** Pids in the state dir's VM pid files (the pool's VMs when no stage runs). */
function vmPids(state: string): number[] {
  const dir = path.join(state, "vms");
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).map((n) => (JSON.parse(fs.readFileSync(path.join(dir, n), "utf8")) as { pid: number }).pid);
}

const spawnedAll = (run: RunState) => run.events.filter((e) => e.event_type === "microvm.spawned").map((e) => e.payload as MicroVmSpawnedPayload);

describe.skipIf(!image)("warm pool with real micro-VMs", () => {
  it("runs a stage in a warm guest, and leaves no QEMU after shutdown or kill -9", async () => {
    const dir = tmpDir("vbx-e2e-warm-");
    dirs.push(dir);
    const state = path.join(dir, "state");
    const spec = path.join(dir, "hello.yaml");
    fs.writeFileSync(
      spec,
      [
        "api_version: v1\nkind: workflow\nname: hello\nsandbox: {mode: local, memory_mb: 256, vcpus: 1}\nworkflow:\n  steps:",
        "    - name: kernel\n      run: {program: uname, args: [\"-r\"]}",
        "    - name: shout\n      depends_on: [kernel]\n      run: {program: tr, args: [a-z, A-Z], stdin_from: kernel}",
        "  output_step: shout\n",
      ].join("\n"),
    );
    const args = ["--listen", "tcp://127.0.0.1:0", "--state-dir", state, "--no-auth", "--accel", "tcg", "--warm-pool", "1"];

    const first = await startDaemonProcess({ args, env: childEnv(dir) });
    daemons.push(first);
    const url = first.urls[0];
    await waitFor(async () => (await pool(url))?.ready === 1, () => `the pool did not fill\n${first.output()}`, 120_000);
    const [poolPid] = vmPids(state);
    expect(pidAlive(poolPid)).toBe(true);

    const id = (await sdk(url).createRun({ file: spec })).run_id;
    let run: RunState | undefined;
    await waitFor(async () => {
      run = await sdk(url).getRun(id);
      return run!.status === "succeeded" || run!.status === "failed";
    }, "the run to end", 120_000);
    expect(run!.status, JSON.stringify(run!.events.map((e) => [e.event_type, (e as { message?: string }).message]))).toBe("succeeded");
    expect(run!.report?.output.trim()).toBe(image!.kernelVersion.toUpperCase());
    const spawned = run!.events.find((e) => e.event_type === "microvm.spawned")!.payload;
    expect(spawned).toMatchObject({ warm: true, pid: poolPid });
    expect(pidAlive(poolPid)).toBe(false); // used once, then destroyed
    // The second stage found the pool refilled (warm) or still booting (cold).
    expect(await pool(url)).toMatchObject({ hits: spawnedAll(run!).filter((e) => e.warm).length, misses: spawnedAll(run!).filter((e) => !e.warm).length });

    // SIGTERM: the refilled pool VM is stopped with the daemon.
    await waitFor(async () => (await pool(url))?.ready === 1, "the pool to refill", 120_000);
    const refilled = vmPids(state);
    expect(refilled).toHaveLength(1);
    expect(await stopDaemon(first)).toEqual({ code: 0, signal: null });
    for (const p of refilled) expect(pidAlive(p)).toBe(false);
    expect(vmPids(state)).toEqual([]);

    // kill -9: the pool VM dies with the daemon; the next daemon removes its pid file.
    const second = await startDaemonProcess({ args, env: childEnv(dir) });
    daemons.push(second);
    await waitFor(async () => (await pool(second.urls[0]))?.ready === 1, "the second daemon's pool to fill", 120_000);
    const orphans = vmPids(state);
    expect(orphans).toHaveLength(1);
    await killHard(second);
    await waitFor(() => orphans.every((p) => !pidAlive(p)), `pool VM ${orphans} outlived its daemon (kill -9)`, 10_000);
    const third = await startDaemonProcess({ args: [...args.slice(0, -1), "0"], env: childEnv(dir) });
    daemons.push(third);
    await waitFor(async () => (await sdk(third.urls[0]).health()).guest_boot === "ok", "the probe", 60_000);
    expect(vmPids(state)).toEqual([]);
    expect(await stopDaemon(third)).toEqual({ code: 0, signal: null });
  }, 400_000);
});
