/**
 * /v1/health of the built daemon (dist/src/main.js) with the real QEMU: it answers
 * while the guest-boot probe runs; a guest image QEMU cannot boot makes it `degraded`
 * with QEMU's own message (local runs fail fast with it, mock runs work); the real
 * guest image settles it `ok`, and a restart on the same state dir reuses the cached
 * verdict instead of booting again; a daemon killed (SIGKILL) while its probe VM boots
 * takes the VM with it.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { validateResponse } from "../helpers/openapi.js";
import { childEnv, killHard, REPO_ROOT, startDaemonProcess, stopDaemon, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { waitForRun } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import type { Health, RunState } from "../helpers/types.js";
import { waitFor } from "../helpers/wait.js";

const qemu = qemuAvailable();
const image = findGuestImage(REPO_ROOT);
const daemons: DaemonProc[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const d of daemons) await stopDaemon(d);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function serve(dir: string, extra: string[] = [], env: Record<string, string> = {}): Promise<DaemonProc> {
  const d = await startDaemonProcess({ args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(dir, "state"), "--no-auth", ...extra], env: childEnv(dir, env) });
  daemons.push(d);
  return d;
}

async function health(d: DaemonProc): Promise<Health> {
  const r = await sdk(d.urls[0]!).api.GET("/v1/health");
  expect(r.response.status).toBe(200);
  expect(validateResponse("getHealth", 200, r.data)).toEqual([]);
  return r.data as Health;
}

async function settled(d: DaemonProc, timeoutMs = 90_000): Promise<Health> {
  let h: Health | undefined;
  await waitFor(async () => (h = await health(d)).guest_boot !== "probing", () => `the guest-boot probe did not settle\n${d.output()}`, timeoutMs);
  return h!;
}

/** echo hi | tr a-z A-Z in sandbox mode `mode`. */
function echoSpec(dir: string, name: string, mode: "local" | "mock"): string {
  const steps = [
    { name: "a", run: { program: "echo", args: ["hi"] } },
    { name: "b", depends_on: ["a"], run: { program: "tr", args: ["a-z", "A-Z"] } },
  ];
  return writeSpec(dir, { ...workflow(name, steps), sandbox: { mode } }, `${name}.json`);
}

async function runToEnd(d: DaemonProc, file: string): Promise<RunState> {
  const created = await sdk(d.urls[0]!).api.POST("/v1/runs", { body: { file } });
  expect(created.response.status).toBe(200);
  const id = created.data!.run_id;
  return waitForRun(d.urls[0]!, id, (r) => r.finished_at !== null, { timeoutMs: 60_000, what: `run ${id} to end` });
}

describe.skipIf(!qemu)("health when QEMU cannot boot the guest", () => {
  it("is degraded with QEMU's message; local runs fail fast with it; mock runs work", async () => {
    const dir = tmpDir("vbx-e2e-health-");
    dirs.push(dir);
    const bogus = path.join(dir, "not-a-kernel");
    fs.writeFileSync(bogus, "this is not a kernel\n");
    const d = await serve(dir, ["--kernel", bogus, "--initramfs", bogus]);
    const h = await settled(d);
    expect(h).toMatchObject({ status: "degraded", accelerator: null, guest_boot: "failed", sandbox_modes: ["mock", "auto"] });
    // QEMU's own words, e.g. "qemu: linux kernel too old to load a ram disk".
    expect(h.guest_boot_error).toMatch(/QEMU exited during boot \(code 1.*\): .*qemu/);
    expect(h.recent_boot_failures!.length).toBeGreaterThan(0);
    expect(h.recent_boot_failures![0]).toMatchObject({ source: "probe", run_id: null });

    const local = await runToEnd(d, echoSpec(dir, "local", "local"));
    expect(local.status).toBe("failed");
    expect(local.error).toContain(h.guest_boot_error);
    const mock = await runToEnd(d, echoSpec(dir, "mock", "mock"));
    expect(mock.status).toBe("succeeded");
  });
});

describe.skipIf(!qemu || !image)("health with the guest image", () => {
  it("answers `probing` at once, settles `ok` by booting a guest, and a restart reuses the cached verdict", async () => {
    const dir = tmpDir("vbx-e2e-health-");
    dirs.push(dir);
    const first = await serve(dir);
    // A probe boot takes hundreds of ms even under KVM; the first reply comes before.
    expect(await health(first)).toMatchObject({ status: "ok", accelerator: "probing", guest_boot: "probing", guest_probe: null, guest_kernel: image!.kernelVersion });
    const h = await settled(first);
    expect(h).toMatchObject({ status: "ok", guest_boot: "ok", guest_boot_error: null, guest_kernel: image!.kernelVersion, guest_probe: { cached: false } });
    expect(["kvm", "tcg"]).toContain(h.accelerator);
    await stopDaemon(first);

    const second = await serve(dir);
    const again = await settled(second);
    expect(again).toMatchObject({ guest_boot: "ok", accelerator: h.accelerator, guest_probe: { cached: true } });
  });
});

/** A process that is gone or a zombie (dead, waiting to be reaped by init). */
function dead(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

describe.skipIf(!fs.existsSync("/usr/bin/setpriv") && !fs.existsSync("/bin/setpriv"))("a daemon killed while its probe VM boots", () => {
  it("takes the probe VM with it", async () => {
    const dir = tmpDir("vbx-e2e-health-");
    dirs.push(dir);
    // A "QEMU" that never boots: the probe waits on it until its deadline.
    const bin = path.join(dir, "bin");
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, "qemu-system-x86_64"), '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "QEMU emulator version 7.2.99 (hangs)"; exit 0; fi\nexec sleep 300\n', { mode: 0o755 });
    const image = path.join(dir, "img");
    fs.writeFileSync(image, "x");
    const d = await serve(dir, ["--kernel", image, "--initramfs", image], { PATH: `${bin}:${process.env.PATH ?? ""}` });
    const vms = path.join(dir, "state", "vms");
    let pid = 0;
    await waitFor(() => {
      const f = fs.existsSync(vms) ? fs.readdirSync(vms).find((n) => n.endsWith(".json")) : undefined;
      pid = f ? (JSON.parse(fs.readFileSync(path.join(vms, f), "utf8")) as { pid: number }).pid : 0;
      return pid > 0;
    }, "the probe VM's pid file", 30_000);
    expect(dead(pid)).toBe(false);
    expect((await health(d)).guest_boot).toBe("probing");
    await killHard(d);
    await waitFor(() => dead(pid), `probe VM ${pid} outlived its daemon`, 10_000);
  });
});
