/**
 * End-to-end through the HTTP API with `sandbox.mode: local`: every stage in its own
 * QEMU micro-VM (TCG in CI). Few, bounded tests — each VM boot costs ~2 s under TCG.
 * Waits are on run state and events with deadlines, never sleeps for luck.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Daemon } from "../../src/server.js";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { startDaemon } from "../helpers/daemon.js";
import type { CreateRunRequest, RunState } from "@voidbox/client";
import { sdk } from "../helpers/sdk.js";
import { pidAlive } from "../helpers/process.js";
import { waitFor } from "../helpers/wait.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const image = findGuestImage(ROOT);
const ready = qemuAvailable() && image !== null;
if (!ready) console.warn("SKIP micro-VM e2e: QEMU or the guest image is missing (make guest)");

let daemon: Daemon;
let url: string;
let dir: string;

/** The kit's client on this file's daemon (every reply passes the conformance gate). */
const client = () => sdk(url);

function spec(name: string, body: string): string {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, `api_version: v1\nkind: workflow\nname: ${name}\nsandbox: {mode: local, memory_mb: 256}\n${body}`);
  return file;
}

async function start(file: string, policy?: CreateRunRequest["policy"]): Promise<string> {
  const r = await client().api.POST("/v1/runs", { body: { file, ...(policy ? { policy } : {}) } });
  expect(r.response.status).toBe(200);
  return r.data!.run_id;
}

/** What `probe` finds (it returns undefined until then), within the deadline. */
const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<NonNullable<T>> => waitFor(probe, what, timeoutMs);

const getRun = (id: string) => client().getRun(id);
const terminal = (id: string) => until(`run ${id} to end`, async () => ((await getRun(id)).finished_at ? getRun(id) : undefined));
const of = (run: RunState, type: string) => run.events.filter((e) => e.event_type === type);


describe.skipIf(!ready)("micro-VM runs through the API (mode: local)", () => {
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-e2e-"));
    // The guest-boot probe as `voidbox serve` runs it (vm: undefined), not the test default (no VMs).
    ({ d: daemon, url } = await startDaemon(path.join(dir, "state"), { vm: undefined }));
  }, 60_000);

  afterAll(async () => {
    await daemon?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("runs each step in its own guest and pipes stdout to the next step's stdin", async () => {
    // The guest-boot probe runs in the background from start; health says `probing` until it settles.
    const health = await until("the guest-boot probe to settle", async () => {
      const h = await client().health();
      return h.guest_boot === "probing" ? undefined : h;
    });
    expect(health.guest_boot).toBe("ok");
    expect(["kvm", "tcg"]).toContain(health.accelerator);
    expect(health.guest_kernel).toBe(image!.kernelVersion);

    const id = await start(
      spec(
        "two-steps",
        `workflow:
  steps:
    - name: kernel
      run: {program: uname, args: ["-r"]}
    - name: shout
      depends_on: [kernel]
      run: {program: tr, args: ["a-z", "A-Z"], stdin_from: kernel}
  output_step: shout
`,
      ),
    );
    const run = await terminal(id);
    expect(run.status, run.error ?? "").toBe("succeeded");
    expect(run.sandbox_mode).toBe("local");
    expect(run.exit_code).toBe(0);
    // The output is the guest's kernel release, upper-cased by the second guest; it can
    // only prove the step ran in the guest if the host runs another kernel.
    expect(image!.kernelVersion, "guest and host kernels must differ").not.toBe(os.release());
    expect(run.report?.output.trim()).toBe(image!.kernelVersion.toUpperCase());
    const spawned = of(run, "microvm.spawned");
    const exited = of(run, "microvm.exited");
    expect(spawned.map((e) => e.stage_name)).toEqual(["kernel", "shout"]);
    expect(exited).toHaveLength(2);
    const pids = new Set<number>();
    for (const e of spawned) {
      const p = e.payload as { accelerator: string; pid: number; boot_ms: number };
      expect(p.accelerator).toBe(health.accelerator);
      expect(p.boot_ms).toBeGreaterThan(0);
      pids.add(p.pid);
      expect(pidAlive(p.pid)).toBe(false);
    }
    expect(pids.size).toBe(2); // a fresh VM per stage
    expect(run.active_microvm_count).toBe(0);
  }, 120_000);

  it("reports a failing step's exit code on stage.failed and the run", async () => {
    const id = await start(
      spec(
        "fails",
        `workflow:
  steps:
    - name: boom
      run: {program: sh, args: ["-c", "echo about to fail >&2; exit 3"]}
`,
      ),
      { max_stage_retries: 0 },
    );
    const run = await terminal(id);
    expect(run.status).toBe("failed");
    expect(run.exit_code).toBe(3);
    const failed = of(run, "stage.failed");
    expect(failed).toHaveLength(1);
    expect((failed[0].payload as { exit_code: number }).exit_code).toBe(3);
    expect((failed[0].payload as { error: string }).error).toContain("about to fail");
  }, 120_000);

  it("kills the VM of a step that exceeds its timeout and fails the run", async () => {
    const id = await start(
      spec(
        "slow",
        `workflow:
  steps:
    - name: slow
      timeout_secs: 3
      run: {program: sleep, args: ["120"]}
`,
      ),
      { max_stage_retries: 0 },
    );
    const run = await terminal(id);
    expect(run.status).toBe("failed");
    const failed = of(run, "stage.failed");
    expect((failed[0].payload as { error: string }).error).toMatch(/timed out/);
    const pid = (of(run, "microvm.spawned")[0].payload as { pid: number }).pid;
    expect(pidAlive(pid)).toBe(false);
    expect(run.active_microvm_count).toBe(0);
  }, 120_000);

  it("cancel stops a running VM within the grace period", async () => {
    const grace = 2;
    const id = await start(
      spec(
        "cancel-me",
        `workflow:
  steps:
    - name: nap
      run: {program: sleep, args: ["300"]}
`,
      ),
      { cancel_grace_period_secs: grace },
    );
    const spawned = await until("microvm.spawned", async () => {
      const events = await client().listEvents(id);
      return events.find((e) => e.event_type === "microvm.spawned");
    });
    const pid = (spawned.payload as { pid: number }).pid;
    expect(pidAlive(pid)).toBe(true);
    const cancelled = await client().cancelRun(id, "e2e");
    expect(cancelled.state).toBe("cancelled");
    // Gone within the grace period (plus reaping slack), not merely eventually.
    await until("the VM to be gone within the grace period", async () => (pidAlive(pid) ? undefined : true), grace * 1000 + 5_000);
    const run = await until("active_microvm_count 0", async () => {
      const r = await getRun(id);
      return r.active_microvm_count === 0 ? r : undefined;
    });
    expect(run.status).toBe("cancelled");
    expect(run.terminal_event_id).toBe(cancelled.terminal_event_id);
    expect(of(run, "stage.failed")[0].payload).toMatchObject({ exit_code: -1 });
  }, 120_000);

  it("an agent box runs its agent program in the guest; an image without it fails the stage clearly", async () => {
    const file = path.join(dir, "agent.yaml");
    fs.writeFileSync(file, `api_version: v1\nkind: agent\nname: agent\nsandbox: {mode: local, memory_mb: 256}\nagent: {prompt: "summarise"}\n`);
    const id = await start(file, { max_stage_retries: 0 });
    const run = await terminal(id);
    expect(run.status).toBe("failed");
    expect(of(run, "microvm.spawned")).toHaveLength(1);
    expect(run.error).toMatch(/claude-code is not available in the sandbox/);
  }, 120_000);

  it("never has more VMs alive than max_parallel_microvms_per_run, and publishes result.json from the guest", async () => {
    const id = await start(
      spec(
        "capped",
        `workflow:
  steps:
    - name: a
      run: {program: echo, args: ["a"]}
    - name: b
      run: {program: echo, args: ["b"]}
    - name: report
      depends_on: [a, b]
      run:
        program: sh
        args:
          - -c
          - |
            cat > report.txt
            printf '{"status":"ok","summary":"from the guest","artifacts":[{"name":"report.txt","media_type":"text/plain"}]}' > result.json
  output_step: report
`,
      ),
      { max_parallel_microvms_per_run: 1 },
    );
    const run = await terminal(id);
    expect(run.status, run.error ?? "").toBe("succeeded");
    let live = 0;
    let peak = 0;
    for (const e of run.events) {
      if (e.event_type === "microvm.spawned") peak = Math.max(peak, ++live);
      if (e.event_type === "microvm.exited") live--;
    }
    expect(peak).toBe(1);
    expect(of(run, "microvm.spawned")).toHaveLength(3);

    expect(run.artifact_publication?.status).toBe("published");
    const out = await client().api.GET("/v1/runs/{run_id}/stages/{stage}/output-file", { params: { path: { run_id: id, stage: "main" } } });
    expect(out.response.status).toBe(200);
    expect(out.data).toMatchObject({ status: "ok", summary: "from the guest" });
    const art = await client().api.GET("/v1/runs/{run_id}/stages/{stage}/artifacts/{name}", { params: { path: { run_id: id, stage: "report", name: "report.txt" } }, parseAs: "text" });
    expect(art.response.status).toBe(200);
    expect(art.response.headers.get("content-type")).toContain("text/plain");
    expect(art.data!.split("\n").filter(Boolean).sort()).toEqual(["a", "b"]);
  }, 180_000);
});
