/**
 * Boots real micro-VMs (TCG here: ~2 s each). Skipped, with the reason printed, when
 * QEMU or the guest image (`make guest`) is missing.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ExecResult, StageVm } from "../../src/sandbox/types.js";
import { QemuSandbox, findGuestImage, killLeftoverVms, liveVmCount, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../helpers/accelerator.js";
import { findGuestKernels } from "../../bench/guest-kernels.js";
import { pidAlive } from "../helpers/process.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const image = findGuestImage(root);
const skipReason = !qemuAvailable()
  ? "qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)"
  : !image
    ? `no guest image in ${path.join(root, "build/guest")} (run: make guest)`
    : null;
if (skipReason) console.warn(`[test/qemu/sandbox] skipped: ${skipReason}`);

const T = 60_000;


describe.skipIf(skipReason !== null)("QemuSandbox (real micro-VM)", () => {
  let pidDir = "";
  let sandbox: QemuSandbox;
  const opened: StageVm[] = [];

  beforeAll(async () => {
    pidDir = mkdtempSync(path.join(os.tmpdir(), "vbx-test-pids-"));
    const accelerator = await probeAccelerator({ kernel: image!.kernel, initramfs: image!.initramfs, deadlineMs: 4000 });
    sandbox = new QemuSandbox({ kernel: image!.kernel, initramfs: image!.initramfs, accelerator, pidDir, bootTimeoutMs: 60_000 });
  }, T);

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((vm) => vm.stop(1000)));
    await killLeftoverVms(pidDir);
  }, T);

  async function open(stage: string): Promise<StageVm> {
    const vm = await sandbox.open({
      runId: "test-run",
      stage,
      attempt: 1,
      memoryMb: 256,
      vcpus: 1,
      network: false,
      signal: new AbortController().signal,
    });
    opened.push(vm);
    return vm;
  }

  function run(vm: StageVm, program: string, args: string[], stdin = "", signal?: AbortSignal): Promise<ExecResult> {
    return vm.exec({ program, args, env: {}, stdin: Buffer.from(stdin), signal: signal ?? new AbortController().signal });
  }

  it("runs commands in the guest: kernel, stdin, exit codes, stderr, files", async () => {
    const vm = await open("basics");
    expect(vm.vm?.pid).toBeGreaterThan(0);
    expect(vm.vm?.bootMs).toBeGreaterThan(0);

    const uname = await run(vm, "uname", ["-r"]);
    expect(uname.exitCode).toBe(0);
    const guestRelease = uname.stdout.toString().trim();
    expect(guestRelease).toBe(image!.kernelVersion);

    const tr = await run(vm, "tr", ["a-z", "A-Z"], "hello from stdin\n");
    expect(tr.stdout.toString()).toBe("HELLO FROM STDIN\n");
    const cat = await run(vm, "cat", [], "bytes\u0000\u00ff");
    expect(cat.stdout.equals(Buffer.from("bytes\u0000\u00ff"))).toBe(true);

    const failing = await run(vm, "sh", ["-c", "exit 3"]);
    expect(failing.exitCode).toBe(3);

    const both = await run(vm, "sh", ["-c", "echo to-out; echo to-err >&2"]);
    expect(both.stdout.toString()).toBe("to-out\n");
    expect(both.stderr.toString()).toBe("to-err\n");

    const missing = await run(vm, "no-such-program", []);
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr.toString()).toMatch(/no-such-program/);

    const write = await run(vm, "sh", ["-c", "echo {} > result.json"]);
    expect(write.exitCode).toBe(0);
    expect((await vm.readFile("result.json", 1024))?.toString()).toBe("{}\n");
    expect(await vm.readFile("missing", 1024)).toBeNull();
    await expect(vm.readFile("result.json", 1)).rejects.toThrow(/over the 1-byte limit/);
    await expect(vm.readFile("/etc/passwd", 1024)).rejects.toThrow(/absolute/);
    await expect(vm.readFile("../etc/passwd", 1024)).rejects.toThrow(/\.\./);

    const exit = await vm.stop(5000);
    expect(exit.killed).toBe(false);
    expect(exit.exitCode).toBe(0);
    expect(pidAlive(vm.vm!.pid)).toBe(false);
    expect(await vm.stop(5000)).toEqual(exit); // idempotent
  }, T);

  it("network: true gives the guest IPv4 to the host through user-mode networking", async () => {
    // Answers the first bytes it reads, then closes (after reading: a FIN, not a reset).
    const server = net.createServer((s) => {
      s.on("error", () => undefined);
      s.once("data", () => s.end("hello guest\n", () => s.destroy()));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const port = (server.address() as AddressInfo).port;
      const vm = await sandbox.open({
        runId: "test-run",
        stage: "net",
        attempt: 1,
        memoryMb: 256,
        vcpus: 1,
        network: true,
        signal: AbortSignal.timeout(60_000),
      });
      opened.push(vm);
      const addr = await run(vm, "ip", ["-4", "addr", "show", "dev", "eth0"], "", AbortSignal.timeout(20_000));
      expect(addr.stdout.toString()).toMatch(/inet 10\.0\.2\.15\/24/);
      // QEMU's user-mode network maps 10.0.2.2 to the host's loopback. (busybox-static's
      // wget crashes in the guest whatever the kernel: use nc.)
      const get = await run(vm, "sh", ["-c", `echo hi | nc -w 10 10.0.2.2 ${port}`], "", AbortSignal.timeout(20_000));
      expect(get.stdout.toString()).toBe("hello guest\n");
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, T);

  it("boots with two vCPUs", async () => {
    const vm = await sandbox.open({
      runId: "test-run",
      stage: "smp",
      attempt: 1,
      memoryMb: 256,
      vcpus: 2,
      network: false,
      signal: AbortSignal.timeout(60_000),
    });
    opened.push(vm);
    const n = await run(vm, "nproc", [], "", AbortSignal.timeout(20_000));
    expect(n.stdout.toString().trim()).toBe("2");
  }, T);

  it("aborting a running command and stopping leaves no QEMU process", async () => {
    const vm = await open("abort");
    const pid = vm.vm!.pid;
    const ac = new AbortController();
    const pending = run(vm, "sleep", ["30"], "", ac.signal);
    ac.abort(); // before or while it runs: either way the command must not complete (sleep 30)
    const r = await pending.catch((e: Error) => e);
    if (!(r instanceof Error)) expect(r.exitCode).toBe(137);
    await vm.stop(1000);
    expect(pidAlive(pid)).toBe(false);
    expect(readdirSync(pidDir)).toEqual([]);
  }, T);

  it("killLeftoverVms kills a VM whose handle was dropped", async () => {
    const vm = await sandbox.open({
      runId: "dropped",
      stage: "leak",
      attempt: 1,
      memoryMb: 256,
      vcpus: 1,
      network: false,
      signal: new AbortController().signal,
    });
    const pid = vm.vm!.pid;
    expect(readdirSync(pidDir).length).toBe(1);
    expect(await killLeftoverVms(pidDir)).toBe(1);
    expect(pidAlive(pid)).toBe(false);
    expect(readdirSync(pidDir)).toEqual([]);
    expect(await killLeftoverVms(pidDir)).toBe(0);
  }, T);

  it("open() honours an abort during boot and kills QEMU", async () => {
    const ac = new AbortController();
    const before = liveVmCount();
    const opening = sandbox.open({ runId: "r", stage: "boot-abort", attempt: 1, memoryMb: 256, vcpus: 1, network: false, signal: ac.signal });
    ac.abort(); // the boot has started (open ran up to its first await) and cannot be done yet
    await expect(
      opening,
    ).rejects.toThrow(/boot aborted/);
    expect(liveVmCount()).toBe(before);
    expect(readdirSync(pidDir)).toEqual([]);
  }, T);

  // What a fresh clone's first `make run` boots while the minimal kernel builds. With the
  // minimal kernel's TCG arguments it booted, but its timers never fired: the first
  // sleep in the guest (the init's output poll) hung, and so did every command.
  const cloud = findGuestKernels(root).cloud;
  it.skipIf(!cloud || cloud.kernel === image?.kernel)("the Debian cloud kernel, the fallback, finishes commands that sleep", async () => {
    const vm = await sandbox.open({ runId: "test-run", stage: "cloud", attempt: 1, memoryMb: 256, vcpus: 1, network: false, kernel: cloud!.kernel, signal: new AbortController().signal });
    opened.push(vm);
    const r = await run(vm, "sh", ["-c", "sleep 0.2; uname -r"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toBe(cloud!.kernelVersion);
  }, T);

  it("a missing kernel fails open() with a clear SandboxError", async () => {
    await expect(
      sandbox.open({
        runId: "r",
        stage: "nokernel",
        attempt: 1,
        memoryMb: 256,
        vcpus: 1,
        network: false,
        kernel: path.join(root, "build/guest/does-not-exist"),
        signal: new AbortController().signal,
      }),
    ).rejects.toThrow(/guest kernel not found/);
  }, T);

  afterAll(() => {
    expect(liveVmCount()).toBe(0);
    rmSync(pidDir, { recursive: true, force: true });
  });
});
