/**
 * The warm pool (--warm-pool): pre-booted VMs handed to one stage attempt each, refilled
 * one boot at a time, evicted before a stage would wait for their slot, replaced when
 * they die idle, and all stopped at shutdown. Micro-VMs are a fake sandbox
 * (pool-fake-vm.ts) injected through createDaemon's `vm` option; real QEMU is in
 * test/qemu/warm-pool.test.ts.
 */
import { afterEach, describe, expect, it } from "vitest";
import { PoolFakeVms } from "./pool-fake-vm.js";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";
import type { MicroVmSpawnedPayload, RunState } from "../helpers/types.js";

let daemon: TestDaemon | undefined;
afterEach(async () => {
  await daemon?.d.close();
  daemon = undefined;
});

type Step = { name: string; run: { program: string; args: string[]; stdin_from?: string }; depends_on?: string[] };
const localSpec = (dir: string, name: string, steps: Step[], memoryMb = 256, extra: Record<string, unknown> = {}) =>
  writeSpec(dir, { ...workflow(name, steps, extra), sandbox: { mode: "local", memory_mb: memoryMb, vcpus: 1 } });
const hello: Step[] = [
  { name: "fetch", run: { program: "echo", args: ["hello"] } },
  { name: "shout", depends_on: ["fetch"], run: { program: "tr", args: ["a-z", "A-Z"], stdin_from: "fetch" } },
];
const sleeper = (name: string): Step => ({ name, run: { program: "sleep", args: ["600"] } });

async function health(url: string) {
  return (await sdk(url).health()).capacity!;
}

async function start(vms: PoolFakeVms, limits: Record<string, number | string[]>): Promise<TestDaemon> {
  daemon = await startDaemon(tmpDir("vbx-warm-") + "/state", { vm: vms.provider(), limits: limits as never });
  return daemon;
}

/** The run's microvm.spawned events, with their payloads as openapi.yaml declares them. */
const spawned = (run: Pick<RunState, "events">) =>
  run.events.filter((e) => e.event_type === "microvm.spawned").map((e) => ({ ...e, payload: e.payload as MicroVmSpawnedPayload }));

describe("warm pool", () => {
  it("fills one boot at a time, hands each stage attempt its own warm VM, counts hits, and refills", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 2, maxVms: 4 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 2, "the pool to fill");
    expect((await health(url)).warm_pool).toMatchObject({ size: 2, ready: 2, booting: 0, in_use: 0, hits: 0, misses: 0, shape: { memory_mb: 256, vcpus: 1, network: false } });
    expect(vms.maxBooting).toBe(1);
    expect(vms.vms.every((v) => v.opts.background && v.opts.runId === "warm-pool" && v.primed)).toBe(true);

    const id = (await sdk(url).createRun({ file: localSpec(dir, "hello", hello) })).run_id;
    const run = await waitForTerminal(url, id);
    expect(run.status).toBe("succeeded");
    const ev = spawned(run);
    expect(ev.map((e) => [e.stage_name, e.payload.warm])).toEqual([["fetch", true], ["shout", true]]);
    expect(ev[0].message).toMatch(/^micro-VM for fetch taken from the warm pool in \d+ ms \(tcg\)$/);
    // One stage attempt per VM: distinct VMs, each ran exactly one command and was stopped.
    const used = ev.map((e) => vms.vms.find((v) => v.pid === e.payload.pid)!);
    expect(new Set(used.map((v) => v.pid)).size).toBe(2);
    for (const v of used) expect(v).toMatchObject({ execs: 1, stopped: true });
    expect(ev.every((e) => e.payload.boot_ms === 7 && e.payload.start_ms! >= 0)).toBe(true);

    await waitFor(async () => (await health(url)).warm_vms_ready === 2, "the pool to refill");
    expect((await health(url)).warm_pool).toMatchObject({ ready: 2, in_use: 0, hits: 2, misses: 0 });
    expect(vms.maxBooting).toBe(1);
    expect(vms.vms.filter((v) => !v.stopped).every((v) => v.execs === 0)).toBe(true);
    const metrics = (await fetch(url + "/metrics").then((r) => r.text())).split("\n");
    expect(metrics).toContain('voidbox_warm_pool_requests_total{result="hit"} 2');
    expect(metrics.some((l) => l.startsWith('voidbox_vm_boot_seconds_count{kind="warm"} 2'))).toBe(true);
  });

  it("produces the same events and outputs as cold boots, plus the warm flag", async () => {
    const dir = tmpDir("vbx-warm-");
    const spec = localSpec(dir, "hello", hello);
    const runOn = async (warmPool: number) => {
      const vms = new PoolFakeVms();
      const { url, d } = await start(vms, { warmPool, maxVms: 4 });
      if (warmPool) await waitFor(async () => (await health(url)).warm_vms_ready === warmPool, "the pool to fill");
      const id = (await sdk(url).createRun({ file: spec, run_id: "same-run" })).run_id;
      const run = await waitForTerminal(url, id);
      await d.close();
      daemon = undefined;
      return run;
    };
    const cold = await runOn(0);
    const warm = await runOn(2);
    expect(spawned(cold).map((e) => e.payload.warm)).toEqual([false, false]);
    expect(spawned(warm).map((e) => e.payload.warm)).toEqual([true, true]);
    // Everything but times, ids, pids and how the VM came is the same.
    const strip = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(strip)
        : v && typeof v === "object"
          ? Object.fromEntries(
              Object.entries(v)
                .filter(([k]) => !/(_ms|_at|^ts|timestamp|event_id|^pid|^warm|duration)/.test(k))
                .map(([k, x]) => [k, k === "message" && typeof x === "string" ? x.replace(/micro-VM for (\w+) .*/, "micro-VM for $1") : strip(x)]),
            )
          : v;
    expect(strip(warm)).toEqual(strip(cold));
    expect(warm.status).toBe("succeeded");
  });

  it("boots cold for another shape, then warms the shape two attempts in a row asked for", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 1, maxVms: 4 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 1, "the pool to fill");
    const big = localSpec(dir, "big", [{ name: "one", run: { program: "echo", args: ["x"] } }], 512);
    const runBig = async () => spawned(await waitForTerminal(url, (await sdk(url).createRun({ file: big })).run_id))[0].payload;

    expect(await runBig()).toMatchObject({ warm: false });
    expect((await health(url)).warm_pool).toMatchObject({ hits: 0, misses: 1, shape: { memory_mb: 256 } });
    expect(await runBig()).toMatchObject({ warm: false });
    await waitFor(async () => {
      const p = (await health(url)).warm_pool!;
      return p.shape.memory_mb === 512 && p.ready === 1;
    }, "the pool to warm 512 MiB VMs");
    // The 256 MiB VM it held was stopped without ever running anything.
    expect(vms.vms.filter((v) => v.opts.background && v.opts.memoryMb === 256).every((v) => v.stopped && v.execs === 0)).toBe(true);
    expect(await runBig()).toMatchObject({ warm: true });
    expect((await health(url)).warm_pool).toMatchObject({ hits: 1, misses: 2 });
  });

  it("boots a stage with mounts cold (they are attached when QEMU starts) and keeps warming the default shape", async () => {
    const dir = tmpDir("vbx-warm-");
    const shared = tmpDir("vbx-warm-mount-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 1, maxVms: 4, mountRoots: [shared] });
    await waitFor(async () => (await health(url)).warm_vms_ready === 1, "the pool to fill");
    const spec = writeSpec(dir, { ...workflow("mounted", hello), sandbox: { mode: "local", memory_mb: 256, vcpus: 1, mounts: [{ host: shared, guest: "/mnt/shared" }] } });
    const run = await waitForTerminal(url, (await sdk(url).createRun({ file: spec })).run_id);
    expect(run.status).toBe("succeeded");
    expect(spawned(run).map((e) => e.payload.warm)).toEqual([false, false]);
    for (const e of spawned(run)) expect(vms.vms.find((v) => v.pid === e.payload.pid)!.opts.storage?.mounts).toHaveLength(1);
    expect((await health(url)).warm_pool).toMatchObject({ ready: 1, hits: 0, misses: 2, shape: { memory_mb: 256, vcpus: 1, network: false } });
  });

  it("never makes a stage wait for an idle pool VM: it is evicted for the stage's slot", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 2, maxVms: 2 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 2, "the pool to fill");
    expect((await health(url)).vms_in_use).toBe(2);
    // Two 512 MiB stages at once: no warm VM fits them, and the pool holds both slots.
    const spec = localSpec(dir, "evict", [sleeper("a"), sleeper("b")], 512, { output_step: "a" });
    const id = (await sdk(url).createRun({ file: spec })).run_id;
    await waitFor(async () => spawned(await sdk(url).getRun(id)).length === 2, "both stages to get a VM");
    const c = await health(url);
    expect(c).toMatchObject({ vms_in_use: 2, stages_waiting_for_vm: 0, warm_vms_ready: 0 });
    expect(vms.vms.filter((v) => v.opts.background).every((v) => v.stopped && v.execs === 0)).toBe(true);

    await sdk(url).cancelRun(id);
    expect((await waitForTerminal(url, id)).status).toBe("cancelled");
    // No stage VM outlives the cancel; the pool takes the freed slots back.
    expect(vms.vms.filter((v) => !v.opts.background).every((v) => v.stopped)).toBe(true);
    await waitFor(async () => (await health(url)).warm_vms_ready === 2, "the pool to refill");
  });

  it("respects max_parallel_microvms_per_run: idle pool VMs are not the run's", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 2, maxVms: 4 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 2, "the pool to fill");
    const spec = localSpec(dir, "cap", [sleeper("a"), sleeper("b")], 256, { output_step: "a" });
    const id = (await sdk(url).createRun({ file: spec, policy: { max_parallel_microvms_per_run: 1 } })).run_id;
    await waitFor(async () => spawned(await sdk(url).getRun(id)).length === 1, "the first stage to start");
    // The pool refills the VM taken; the second stage still waits for the run's cap.
    await waitFor(async () => (await health(url)).warm_vms_ready === 2, "the pool to refill");
    expect(spawned(await sdk(url).getRun(id))).toHaveLength(1);
    expect((await health(url)).warm_pool).toMatchObject({ in_use: 1, hits: 1 });
    await sdk(url).cancelRun(id);
    expect((await waitForTerminal(url, id)).status).toBe("cancelled");
    expect(vms.vms.filter((v) => v.execs > 0).every((v) => v.stopped)).toBe(true);
    expect((await health(url)).warm_pool).toMatchObject({ in_use: 0 });
  });

  it("stops a warm VM at the stage timeout", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 1, maxVms: 4 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 1, "the pool to fill");
    const spec = localSpec(dir, "slow", [sleeper("a")]);
    const id = (await sdk(url).createRun({ file: spec, policy: { stage_timeout_secs: 1, max_stage_retries: 0 } })).run_id;
    const run = await waitForTerminal(url, id);
    expect(run.status).toBe("failed");
    expect(run.events.some((e) => e.event_type === "stage.failed" && /time/i.test(String(e.payload!.error)))).toBe(true);
    const vm = vms.vms.find((v) => v.pid === spawned(run)[0].payload.pid)!;
    expect(spawned(run)[0].payload.warm).toBe(true);
    expect(vm).toMatchObject({ execs: 1, stopped: true });
  });

  it("drops and replaces a pool VM that dies while idle; never hands it out", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    const { url } = await start(vms, { warmPool: 1, maxVms: 4 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 1, "the pool to fill");
    const first = vms.vms[0];
    first.die();
    await waitFor(() => vms.vms.length === 2 && vms.alive().length === 1, "a replacement to boot");
    await waitFor(async () => (await health(url)).warm_vms_ready === 1, "the pool to refill");
    const run = await waitForTerminal(url, (await sdk(url).createRun({ file: localSpec(dir, "one", [hello[0]]) })).run_id);
    expect(run.status).toBe("succeeded");
    expect(spawned(run)[0].payload).toMatchObject({ warm: true, pid: vms.vms[1].pid });
    expect(first.execs).toBe(0);
  });

  it("never offers a pool VM that cannot run a command; the stage boots cold", async () => {
    const dir = tmpDir("vbx-warm-");
    const vms = new PoolFakeVms();
    vms.primeFails = true;
    const { url } = await start(vms, { warmPool: 1, maxVms: 4 });
    await waitFor(() => vms.vms.some((v) => v.primed && v.stopped), "a pool boot to fail its first command");
    expect((await health(url)).warm_vms_ready).toBe(0);
    const run = await waitForTerminal(url, (await sdk(url).createRun({ file: localSpec(dir, "one", [hello[0]]) })).run_id);
    expect(run.status).toBe("succeeded");
    expect(spawned(run)[0].payload.warm).toBe(false);
    expect(vms.vms.filter((v) => v.opts.background).every((v) => v.stopped && v.execs === 0)).toBe(true);
  });

  it("stops idle and booting pool VMs at shutdown and boots no more", async () => {
    const vms = new PoolFakeVms();
    vms.poolBootsAllowed = 1;
    const { url, d } = await start(vms, { warmPool: 2, maxVms: 4 });
    await waitFor(async () => (await health(url)).warm_vms_ready === 1, "one pool VM to be ready");
    await waitFor(() => vms.booting === 1, "the second pool VM to be booting");
    await d.close();
    daemon = undefined;
    vms.releasePoolBoots();
    await waitFor(() => vms.booting === 0, "the held boot to end");
    await new Promise((r) => setImmediate(r));
    expect(vms.alive()).toEqual([]);
    expect(vms.vms).toHaveLength(1);
  });

  it("has no pool by default for an injected sandbox, and none with --warm-pool 0", async () => {
    for (const limits of [{ maxVms: 4 }, { warmPool: 0, maxVms: 4 }] as Array<Record<string, number>>) {
      const vms = new PoolFakeVms();
      const { url, d } = await start(vms, limits);
      const c = await health(url);
      expect(c.warm_vms_ready).toBe(0);
      expect(c.warm_pool).toBeUndefined();
      expect(vms.vms).toHaveLength(0);
      await d.close();
      daemon = undefined;
    }
  });
});
