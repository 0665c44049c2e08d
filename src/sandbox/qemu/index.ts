/**
 * QemuSandbox: every stage attempt runs in a fresh QEMU micro-VM (`-M microvm`) booted
 * from the guest image built by guest/build.sh. The host talks to the guest's init over
 * a virtio-serial port (see protocol.ts).
 */
import { accessSync, constants as fsc, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import {
  FileTooBigError,
  SandboxError,
  capOutput,
  type ExecCommand,
  type ExecResult,
  type Sandbox,
  type StageVm,
  type StageVmOptions,
  type VmExit,
  type VmInfo,
} from "../types.js";
import { MAX_FRAME_PAYLOAD, ProtocolError, buildExecScript, checkRelPath, type Frame } from "./protocol.js";
import { QemuVm, tunedKernelArgs, type Accelerator, type Logger } from "./vm.js";
import { egressArgs } from "./network.js";

export {
  killLeftoverVms,
  stopAllVms,
  checkDieWithParent,
  qemuAvailable,
  liveVmCount,
  tunedKernelArgs,
  untunedKernelArgs,
  hostTscKhz,
  TUNED_KERNEL_ARGS,
  TCG_KERNEL_ARGS,
  UNTUNED_KERNEL_ARGS,
  microvmOptionsFor,
} from "./vm.js";
export type { Accelerator, Logger } from "./vm.js";

export interface QemuSandboxOptions {
  kernel: string;
  initramfs: string;
  accelerator: Accelerator;
  /** Directory holding one pid file per live VM (for killLeftoverVms after a crash). */
  pidDir: string;
  /** Boot → ready-marker deadline; default 60 s (TCG boots take 2–4 s, more under load). */
  bootTimeoutMs?: number;
  log?: Logger;
  /** Kernel command line words; default tunedKernelArgs(accelerator, vcpus, kernel). */
  kernelArgs?: string[];
  qemuBinary?: string;
  /** Spawn QEMU so that it dies with the daemon (setpriv --pdeathsig KILL). */
  dieWithParent?: boolean;
  /** Told about every boot that failed (not about aborted ones): health lists recent ones. */
  onBootFailure?: (f: { runId: string; stage: string; attempt: number; reason: string }) => void;
}

/** After the guest channel closes during boot, how long QEMU's exit may take to be seen. */
const CHANNEL_EXIT_GRACE_MS = 1000;
/** How long an aborted command may take to be confirmed dead by the guest. */
const ABORT_CONFIRM_MS = 5000;
/** Niceness of a warm-pool boot: it takes CPU only when running stages leave some. */
const BACKGROUND_NICE = 10;
/** Bound on a readFile round trip (16 MiB over virtio-serial takes well under this). */
const READ_TIMEOUT_MS = 60_000;

export class QemuSandbox implements Sandbox {
  readonly kind = "qemu" as const;
  constructor(private readonly opts: QemuSandboxOptions) {}

  async open(o: StageVmOptions): Promise<StageVm> {
    if (o.signal.aborted) throw new SandboxError("micro-VM boot aborted before start");
    const kernel = o.kernel ?? this.opts.kernel;
    const initramfs = o.initramfs ?? this.opts.initramfs;
    for (const [what, p] of [["kernel", kernel], ["initramfs", initramfs]] as const) {
      if (!existsSync(p)) throw new SandboxError(`guest ${what} not found: ${p} (run: make guest)`);
    }
    const bootTimeoutMs = this.opts.bootTimeoutMs ?? 60_000;
    const t0 = Date.now();
    let vm: QemuVm;
    try {
      // An egress network replaces sandbox.network: the guest reaches that endpoint only.
      const egress = o.egress ? egressArgs(o.egress) : undefined;
      vm = await QemuVm.spawn({
        kernel,
        initramfs,
        accelerator: this.opts.accelerator,
        memoryMb: o.memoryMb,
        vcpus: o.vcpus,
        network: o.network && !egress,
        storage: o.storage,
        kernelArgs: [...(this.opts.kernelArgs ?? tunedKernelArgs(this.opts.accelerator, o.vcpus, kernel)), ...(egress?.kernel ?? [])],
        extraArgs: egress?.qemu,
        runId: o.runId,
        stage: o.stage,
        attempt: o.attempt,
        pidDir: this.opts.pidDir,
        qemuBinary: this.opts.qemuBinary,
        dieWithParent: this.opts.dieWithParent,
        nice: o.background ? BACKGROUND_NICE : undefined,
        log: this.opts.log,
      });
    } catch (e) {
      const reason = `cannot start micro-VM: ${(e as Error).message}`;
      this.opts.onBootFailure?.({ runId: o.runId, stage: o.stage, attempt: o.attempt, reason });
      throw new SandboxError(reason);
    }
    const ready = await waitReady(vm, bootTimeoutMs, o.signal);
    if (!ready.ok) {
      await vm.stop(0);
      await vm.waitOutput(1000);
      const tail = vm.consoleText(1500);
      this.opts.log?.warn({ runId: o.runId, stage: o.stage, reason: ready.reason }, "micro-VM boot failed");
      if (!o.signal.aborted) {
        this.opts.onBootFailure?.({ runId: o.runId, stage: o.stage, attempt: o.attempt, reason: withQemuMessage(ready.reason, tail) });
      }
      throw new SandboxError(`micro-VM boot failed: ${ready.reason}${tail ? `; console: ${tail}` : ""}`);
    }
    const info: VmInfo = { accelerator: this.opts.accelerator, pid: vm.pid, bootMs: Date.now() - t0 };
    this.opts.log?.info({ runId: o.runId, stage: o.stage, ...info, guestKernel: ready.kernelVersion }, "micro-VM ready");
    return new QemuStageVm(vm, info, ready.kernelVersion);
  }
}

type ReadyResult = { ok: true; kernelVersion: string } | { ok: false; reason: string };

/** Wait for the guest's READY frame, bounded by timeout, QEMU exit and abort. */
function waitReady(vm: QemuVm, timeoutMs: number, signal?: AbortSignal): Promise<ReadyResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: ReadyResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(channelTimer);
      signal?.removeEventListener("abort", onAbort);
      vm.onFrame = () => {};
      vm.onChannelError = () => {};
      vm.onExit = () => {};
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: `no ready marker within ${timeoutMs} ms` }), timeoutMs);
    const onAbort = () => finish({ ok: false, reason: "boot aborted" });
    signal?.addEventListener("abort", onAbort, { once: true });
    vm.onFrame = (f) => {
      if (f.type === "READY") finish({ ok: true, kernelVersion: f.payload.toString("utf8").trim() });
      else if (f.type === "ERROR") finish({ ok: false, reason: `guest error: ${f.payload.toString("utf8")}` });
      else finish({ ok: false, reason: `unexpected ${f.type} frame before ready` });
    };
    // A QEMU that refuses to start closes the channel and exits at about the same time:
    // its exit (with QEMU's own message) says more, so it gets a moment to arrive first.
    let channelTimer: NodeJS.Timeout | undefined;
    vm.onChannelError = (e) => {
      channelTimer ??= setTimeout(() => finish({ ok: false, reason: `guest channel: ${e.message}` }), CHANNEL_EXIT_GRACE_MS);
    };
    vm.onExit = (e) =>
      finish({ ok: false, reason: `QEMU exited during boot (code ${e.exitCode}, signal ${e.signal})` });
    if (vm.exited) vm.onExit(vm.exited);
    if (signal?.aborted) onAbort();
  });
}

interface Pending {
  id: number;
  kind: "exec" | "read";
  resolve: (f: Frame[]) => void;
  reject: (e: Error) => void;
  frames: Frame[];
  /** Live output of an exec (OUTC/ERRC): handed on as it comes, never kept in `frames`. */
  chunk?: (f: Frame) => void;
}

class QemuStageVm implements StageVm {
  private nextId = 1;
  private pending: Pending | null = null;
  /** Serialises requests: the guest handles one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private broken: Error | null = null;
  private stopping = false;
  private reniced = false;
  readonly closed: Promise<void>;

  constructor(
    private readonly qvm: QemuVm,
    readonly vm: VmInfo,
    readonly guestKernelVersion: string,
  ) {
    qvm.onFrame = (f) => this.onFrame(f);
    qvm.onChannelError = (e) => this.fail(
      e instanceof ProtocolError ? new SandboxError(`guest protocol error: ${e.message}`) : new SandboxError(`guest channel lost: ${e.message}`),
    );
    let markClosed!: () => void;
    this.closed = new Promise((r) => (markClosed = r));
    qvm.onExit = (e) => {
      this.fail(new SandboxError(`micro-VM exited (code ${e.exitCode}, signal ${e.signal})${this.stopping ? " (stopped)" : ""}`));
      markClosed();
    };
    if (qvm.exited) qvm.onExit(qvm.exited);
  }

  foreground(): void {
    if (this.reniced) return;
    this.reniced = true;
    this.qvm.renice(0);
  }

  private fail(e: Error): void {
    if (!this.broken) this.broken = e;
    const p = this.pending;
    this.pending = null;
    p?.reject(e);
  }

  private onFrame(f: Frame): void {
    const p = this.pending;
    if (!p || f.id !== p.id) return; // late reply to an abandoned request
    if (f.type === "ERROR") {
      this.pending = null;
      p.reject(new SandboxError(`guest error: ${f.payload.toString("utf8")}`));
      return;
    }
    if (f.type === "OUTC" || f.type === "ERRC") {
      p.chunk?.(f);
      return;
    }
    p.frames.push(f);
    const done = p.kind === "exec" ? f.type === "EXIT" : ["FILE", "NOFILE", "TOOBIG"].includes(f.type);
    if (done) {
      this.pending = null;
      p.resolve(p.frames);
    }
  }

  private request(
    kind: Pending["kind"],
    send: (id: number) => void,
    timeoutMs: number | null,
    signal?: AbortSignal,
    onAbort?: (id: number) => void,
    chunk?: (f: Frame) => void,
  ): Promise<Frame[]> {
    const run = () =>
      new Promise<Frame[]>((resolve, reject) => {
        if (this.broken) return reject(this.broken);
        const id = this.nextId++;
        let timer: NodeJS.Timeout | undefined;
        let abortTimer: NodeJS.Timeout | undefined;
        const cleanup = () => {
          if (timer) clearTimeout(timer);
          if (abortTimer) clearTimeout(abortTimer);
          signal?.removeEventListener("abort", abortListener);
        };
        const p: Pending = {
          id,
          kind,
          frames: [],
          chunk,
          resolve: (f) => {
            cleanup();
            resolve(f);
          },
          reject: (e) => {
            cleanup();
            reject(e);
          },
        };
        const abandon = (e: Error) => {
          if (this.pending === p) this.pending = null;
          p.reject(e);
        };
        const abortListener = () => {
          onAbort?.(id);
          abortTimer = setTimeout(
            () => abandon(new SandboxError(`command aborted; guest did not confirm within ${ABORT_CONFIRM_MS} ms`)),
            ABORT_CONFIRM_MS,
          );
        };
        this.pending = p;
        if (timeoutMs !== null) {
          timer = setTimeout(() => abandon(new SandboxError(`guest did not answer ${kind} within ${timeoutMs} ms`)), timeoutMs);
        }
        try {
          send(id);
        } catch (e) {
          abandon(e instanceof ProtocolError ? new SandboxError(e.message) : (e as Error));
          return;
        }
        if (signal) {
          if (signal.aborted) abortListener();
          else signal.addEventListener("abort", abortListener, { once: true });
        }
      });
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  async exec(cmd: ExecCommand): Promise<ExecResult> {
    let script: string;
    try {
      script = buildExecScript(cmd.program, cmd.args, cmd.env);
    } catch (e) {
      throw new SandboxError(`cannot run ${cmd.program}: ${(e as Error).message}`);
    }
    // Each stream comes back as one frame: never ask for more than a frame may carry.
    const cap = Math.min(cmd.maxOutputBytes ?? MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD);
    // Bytes of each stream handed on live; a chunk that does not continue them exactly is
    // ignored (the caller takes what is missing from the final OUT/ERR).
    const live = { OUTC: 0, ERRC: 0 };
    const onChunk = (f: Frame) => {
      const type = f.type as keyof typeof live;
      if (!cmd.onOutput || f.arg !== live[type] || live[type] >= cap || f.payload.length === 0) return;
      const data = f.payload.length > cap - live[type] ? f.payload.subarray(0, cap - live[type]) : f.payload;
      live[type] += data.length;
      try {
        cmd.onOutput(type === "OUTC" ? "stdout" : "stderr", data);
      } catch {
        // Runs in the channel's data handler: a throw here must not take the daemon down.
        live.OUTC = live.ERRC = cap;
      }
    };
    const frames = await this.request(
      "exec",
      (id) => {
        this.qvm.send("STDIN", id, 0, cmd.stdin);
        this.qvm.send("EXEC", id, cap, Buffer.from(script, "utf8"));
      },
      null,
      cmd.signal,
      (id) => {
        try {
          this.qvm.send("KILL", id, 0);
        } catch {
          // channel gone; stop() will kill the VM
        }
      },
      onChunk,
    );
    const stream = (type: "OUT" | "ERR") => {
      const got = frames.filter((f) => f.type === type);
      // ARG is the full size (0 from images that predate the cap: then the payload is all of it).
      return capOutput(Buffer.concat(got.map((f) => f.payload)), cap, got.reduce((n, f) => n + Math.max(f.arg, 0), 0));
    };
    const out = stream("OUT");
    const err = stream("ERR");
    const exit = frames.find((f) => f.type === "EXIT")!;
    return { exitCode: exit.arg, stdout: out.kept, stderr: err.kept, stdoutBytes: out.total, stderrBytes: err.total };
  }

  async readFile(relPath: string, maxBytes: number): Promise<Buffer | null> {
    const bad = checkRelPath(relPath);
    if (bad) throw new SandboxError(`invalid workspace path: ${bad}`);
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new SandboxError(`invalid maxBytes ${maxBytes}`);
    // One file is one FILE frame: past the frame limit the guest must answer TOOBIG, never send it.
    const limit = Math.min(maxBytes, MAX_FRAME_PAYLOAD);
    const frames = await this.request("read", (id) => this.qvm.send("READ", id, limit, Buffer.from(relPath, "utf8")), READ_TIMEOUT_MS);
    const last = frames[frames.length - 1];
    if (last.type === "NOFILE") return null;
    if (last.type === "TOOBIG") throw new FileTooBigError(relPath, last.arg, limit);
    if (last.payload.length > limit) throw new FileTooBigError(relPath, last.payload.length, limit);
    return last.payload;
  }

  async stop(graceMs: number): Promise<VmExit> {
    this.stopping = true;
    const e = await this.qvm.stop(graceMs);
    return { exitCode: e.exitCode, signal: e.signal, killed: e.killed };
  }
}

// --- image discovery and accelerator probe ---------------------------------------------

export interface GuestImage {
  kernel: string;
  initramfs: string;
  kernelVersion: string;
}

/** A kernel in `dir`: the uncompressed `vmlinux` (PVH boot, faster under TCG) or else `vmlinuz`. */
function kernelIn(dir: string, names = ["vmlinux", "vmlinuz"]): { kernel: string; kernelVersion: string } | null {
  const kernel = names.map((n) => path.join(dir, n)).find((p) => existsSync(p));
  if (!kernel) return null;
  try {
    const kernelVersion = readFileSync(path.join(dir, "kernel-version"), "utf8").trim();
    return kernelVersion ? { kernel, kernelVersion } : null;
  } catch {
    return null;
  }
}

function guestInitramfs(dir: string): string | undefined {
  return ["initramfs.cpio.lz4", "initramfs.cpio.gz"].map((n) => path.join(dir, n)).find((p) => existsSync(p));
}

/**
 * The guest image built by `guest/build.sh` in `<projectRoot>/build/guest`, or null.
 * Picks the best kernel available: the minimal custom kernel (`custom/`, boots in
 * well under a second under TCG), else the one build.sh chose (top level), else the
 * Debian cloud kernel (`cloud/`). Prefers the uncompressed `vmlinux` over `vmlinuz`.
 */
export function findGuestImage(projectRoot: string): GuestImage | null {
  const dir = path.join(projectRoot, "build", "guest");
  const initramfs = guestInitramfs(dir);
  if (!initramfs) return null;
  for (const sub of ["custom", ".", "cloud"]) {
    const k = kernelIn(path.join(dir, sub));
    if (k) return { ...k, initramfs };
  }
  return null;
}

/**
 * Every kernel the guest image offers (for benchmarks): the custom kernel, the Debian
 * cloud kernel booted through PVH (`vmlinux`) and its stock bzImage (`vmlinuz`).
 */
export function findGuestKernels(projectRoot: string): {
  custom: GuestImage | null;
  cloud: GuestImage | null;
  cloudBzImage: GuestImage | null;
} {
  const dir = path.join(projectRoot, "build", "guest");
  const initramfs = guestInitramfs(dir);
  const none = { custom: null, cloud: null, cloudBzImage: null };
  if (!initramfs) return none;
  const img = (k: { kernel: string; kernelVersion: string } | null) => (k ? { ...k, initramfs } : null);
  // Older images had the cloud kernel at the top level (no cloud/ directory).
  const cloudDir = existsSync(path.join(dir, "cloud")) ? path.join(dir, "cloud") : dir;
  return {
    custom: img(kernelIn(path.join(dir, "custom"), ["vmlinux"])),
    cloud: img(kernelIn(cloudDir)),
    cloudBzImage: img(kernelIn(cloudDir, ["vmlinuz"])),
  };
}

/** `reason` plus the last lines QEMU or the guest printed (QEMU's own error message when it refused to start). */
export function withQemuMessage(reason: string, output: string): string {
  const lines = output.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
  const tail = lines.slice(-3).join(" | ").slice(-400);
  return tail ? `${reason}: ${tail}` : reason;
}

export type BootProbeResult = { ok: true; ms: number; kernelVersion: string } | { ok: false; ms: number; reason: string };

/** Runs PROBE_COMMAND before `deadline` (epoch ms); null when it printed what it should, else why not. */
async function probeCommand(vm: QemuStageVm, deadline: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const ms = Math.max(1000, deadline - Date.now());
  const timedOut = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`did not finish a command within ${ms} ms`), ms)));
  const ran = vm
    .exec({ ...PROBE_COMMAND, env: {}, stdin: Buffer.alloc(0), signal: new AbortController().signal, maxOutputBytes: 4096 })
    .then(
      (x) => (x.exitCode === 0 && x.stdout.toString() === PROBE_OUTPUT ? null : `a command in it failed (exit ${x.exitCode}: ${x.stdout.toString().slice(0, 80)})`),
      (e: Error) => `a command in it failed: ${e.message}`,
    );
  try {
    return await Promise.race([ran, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the probe runs once the guest is ready, and the output that proves it ran. */
const PROBE_COMMAND = { program: "echo", args: ["voidbox-probe-ok"] };
const PROBE_OUTPUT = "voidbox-probe-ok\n";

/**
 * Boots the guest once under `accelerator` (1 vCPU, 256 MiB, no network), waits for its
 * ready marker and runs one command in it, all bounded by `deadlineMs`: a guest that
 * boots but cannot finish a command (a kernel whose timers never fire) fails here, not
 * in every run. The VM is always killed, and dies with this process (parent-death
 * signal); its pid file (in `pidDir`) is the fallback when setpriv is missing.
 */
export async function bootProbe(o: {
  kernel: string;
  initramfs: string;
  accelerator: Accelerator;
  deadlineMs: number;
  qemuBinary?: string;
  pidDir?: string;
  signal?: AbortSignal;
}): Promise<BootProbeResult> {
  const t0 = Date.now();
  let vm: QemuVm | null = null;
  try {
    vm = await QemuVm.spawn({
      kernel: o.kernel,
      initramfs: o.initramfs,
      accelerator: o.accelerator,
      memoryMb: 256,
      vcpus: 1,
      network: false,
      runId: "probe",
      stage: o.accelerator,
      pidDir: o.pidDir,
      qemuBinary: o.qemuBinary,
    });
    const r = await waitReady(vm, o.deadlineMs, o.signal);
    if (r.ok) {
      const failed = await probeCommand(new QemuStageVm(vm, { accelerator: o.accelerator, pid: vm.pid, bootMs: Date.now() - t0 }, r.kernelVersion), t0 + o.deadlineMs);
      if (failed === null) return { ok: true, ms: Date.now() - t0, kernelVersion: r.kernelVersion };
      return { ok: false, ms: Date.now() - t0, reason: `guest ${r.kernelVersion} booted but ${failed}` };
    }
    const ms = Date.now() - t0;
    // QEMU's last words (its error when it refuses to start) may still be in the pipe.
    if (vm.exited) await vm.waitOutput(1000);
    return { ok: false, ms, reason: withQemuMessage(r.reason, vm.consoleText(2000)) };
  } catch (e) {
    return { ok: false, ms: Date.now() - t0, reason: `cannot start QEMU: ${(e as Error).message}` };
  } finally {
    await vm?.stop(0);
  }
}

/**
 * "kvm" only when the real guest boots to its ready marker under `-accel kvm` before
 * the deadline; "tcg" when /dev/kvm is unusable or the KVM boot fails or times out.
 * (Benchmarks and tests; the daemon uses guest-probe.ts, which also proves TCG boots.)
 */
export async function probeAccelerator(o: {
  kernel: string;
  initramfs: string;
  deadlineMs?: number;
  qemuBinary?: string;
  log?: Logger;
}): Promise<Accelerator> {
  try {
    accessSync("/dev/kvm", fsc.R_OK | fsc.W_OK);
  } catch {
    o.log?.info({}, "accelerator probe: /dev/kvm not usable, using tcg");
    return "tcg";
  }
  const r = await bootProbe({ kernel: o.kernel, initramfs: o.initramfs, accelerator: "kvm", deadlineMs: o.deadlineMs ?? 4000, qemuBinary: o.qemuBinary });
  const acc: Accelerator = r.ok ? "kvm" : "tcg";
  o.log?.info({ accelerator: acc, ms: r.ms, reason: r.ok ? undefined : r.reason }, "accelerator probe");
  return acc;
}
