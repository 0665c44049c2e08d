/**
 * Node capacity: the VM slots shared by all runs (--max-vms, --max-guest-memory), what
 * /v1/health reports of them, and the 503 a create gets while stages already wait for a
 * slot. Micro-VMs are a fake sandbox injected through createDaemon's `vm` option.
 */
import { afterEach, describe, expect, it } from "vitest";
import { NodeSlots } from "../../src/engine/node-slots.js";
import { SandboxError } from "../../src/sandbox/types.js";
import { FakeVms } from "./fake-vm.js";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { errorOf } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

let daemon: TestDaemon | undefined;
afterEach(async () => {
  await daemon?.d.close();
  daemon = undefined;
});

const localSpec = (dir: string, name: string, memoryMb = 256) =>
  writeSpec(dir, { ...workflow(name, [{ name: "work", run: { program: "sh", args: ["-c", "true"] } }]), sandbox: { mode: "local", memory_mb: memoryMb, vcpus: 1 } });

async function capacity(url: string) {
  return (await sdk(url).health()).capacity!;
}

async function runEnds(url: string, id: string): Promise<string> {
  return waitFor(async () => {
    const r = await sdk(url).getRun(id);
    return r.finished_at ? r.status : undefined;
  }, `run ${id} to end`);
}

describe("node capacity", () => {
  it("counts VMs as they start and stop, refuses creates while stages wait for a slot, and accepts again when one frees", async () => {
    const dir = tmpDir("vbx-cap-");
    const vms = new FakeVms();
    daemon = await startDaemon(dir + "/state", { vm: vms.provider(), limits: { maxVms: 1, maxGuestMemoryMib: 1024 } });
    const { url } = daemon;
    const spec = localSpec(dir, "cap");

    expect(await capacity(url)).toMatchObject({ max_vms: 1, guest_memory_mib: 1024, vms_in_use: 0, guest_memory_in_use_mib: 0, warm_vms_ready: 0, active_runs: 0, accepts_runs: true, draining: false });

    const c = sdk(url);
    const a = (await c.createRun({ file: spec })).run_id;
    await waitFor(async () => (await capacity(url)).vms_in_use === 1, "run a's VM to take the slot");
    expect(await capacity(url)).toMatchObject({ vms_in_use: 1, vcpus_in_use: 1, guest_memory_in_use_mib: 256, active_runs: 1, accepts_runs: true });

    // The slot is taken but nobody waits yet: this run is accepted and its stage queues.
    const b = await c.api.POST("/v1/runs", { body: { file: spec } });
    expect(b.response.status).toBe(200);
    await waitFor(async () => (await capacity(url)).stages_waiting_for_vm === 1, "run b's stage to wait for a slot");
    expect(await capacity(url)).toMatchObject({ vms_in_use: 1, active_runs: 2, accepts_runs: false });

    const refused = await c.api.POST("/v1/runs", { body: { file: spec } });
    expect(refused.response.status).toBe(503);
    expect(refused.error).toMatchObject({ code: "RESOURCE_LIMIT_EXCEEDED", retryable: true });
    expect(errorOf(refused).message).toMatch(/at capacity: 1\/1 micro-VMs/);
    // An idempotent create of a known active run is not a new run: still answered.
    const again = await c.api.POST("/v1/runs", { body: { file: spec, run_id: a } });
    expect(again.response.status).toBe(200);

    vms.finish(a);
    expect(await runEnds(url, a)).toBe("succeeded");
    await waitFor(async () => (await capacity(url)).stages_waiting_for_vm === 0, "run b's stage to get the slot");
    expect(await capacity(url)).toMatchObject({ vms_in_use: 1, active_runs: 1, accepts_runs: true });
    const d = await c.api.POST("/v1/runs", { body: { file: spec } });
    expect(d.response.status).toBe(200);

    vms.finish(b.data!.run_id);
    expect(await runEnds(url, b.data!.run_id)).toBe("succeeded");
    await waitFor(() => vms.live.size === 1, "run d's VM to start");
    vms.finish(d.data!.run_id);
    expect(await runEnds(url, d.data!.run_id)).toBe("succeeded");
    expect(await capacity(url)).toMatchObject({ vms_in_use: 0, guest_memory_in_use_mib: 0, stages_waiting_for_vm: 0, active_runs: 0, accepts_runs: true });
    expect(vms.opened).toBe(3);
  });

  it("gates on guest memory too, and a guest larger than the node's memory fails its stage instead of waiting forever", async () => {
    const dir = tmpDir("vbx-cap-");
    const vms = new FakeVms();
    daemon = await startDaemon(dir + "/state", { vm: vms.provider(), limits: { maxVms: 8, maxGuestMemoryMib: 400 } });
    const { url } = daemon;
    const a = (await sdk(url).createRun({ file: localSpec(dir, "m1") })).run_id;
    await waitFor(() => vms.live.size === 1, "run a's VM");
    const b = (await sdk(url).createRun({ file: localSpec(dir, "m2") })).run_id;
    await waitFor(async () => (await capacity(url)).stages_waiting_for_vm === 1, "run b to wait for memory");
    expect(await capacity(url)).toMatchObject({ vms_in_use: 1, guest_memory_in_use_mib: 256, accepts_runs: false });
    vms.finish(a);
    await waitFor(() => vms.live.has(`${b}/work`), "run b's VM once a's memory is free");
    vms.finish(b);
    expect(await runEnds(url, b)).toBe("succeeded");

    const big = (await sdk(url).createRun({ file: localSpec(dir, "big", 512) })).run_id;
    expect(await runEnds(url, big)).toBe("failed");
    const run = await sdk(url).getRun(big);
    expect(run.error).toMatch(/512 MiB of guest memory, more than this node gives all guests together \(400 MiB\)/);
  });

  it("NodeSlots: first come first served, an aborted waiter leaves the queue", async () => {
    const slots = new NodeSlots(1, 1000);
    const free = new AbortController();
    const r1 = await slots.acquire({ memoryMib: 100, vcpus: 1 }, free.signal);
    const gone = new AbortController();
    const w1 = slots.acquire({ memoryMib: 100, vcpus: 1 }, gone.signal);
    const w2 = slots.acquire({ memoryMib: 100, vcpus: 2 }, free.signal);
    expect(slots.usage()).toEqual({ vms: 1, memoryMib: 100, vcpus: 1, waiting: 2 });
    gone.abort("timeout");
    await expect(w1).rejects.toBe("timeout");
    expect(slots.usage().waiting).toBe(1);
    r1();
    r1(); // idempotent
    const r2 = await w2;
    expect(slots.usage()).toEqual({ vms: 1, memoryMib: 100, vcpus: 2, waiting: 0 });
    r2();
    expect(slots.usage()).toEqual({ vms: 0, memoryMib: 0, vcpus: 0, waiting: 0 });
    await expect(slots.acquire({ memoryMib: 2000, vcpus: 1 }, free.signal)).rejects.toBeInstanceOf(SandboxError);
  });
});
