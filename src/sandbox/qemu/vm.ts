/**
 * One QEMU micro-VM process and the host end of its virtio-serial channel. Its command
 * line is command-line.ts's, its kernel arguments kernel-args.ts's; it registers with
 * registry.ts and writes a pid file for leftovers.ts.
 *
 * Nothing here knows about stages' semantics; QemuSandbox (sandbox.ts) drives the
 * protocol. Every wait is bounded by the caller's timeouts.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Accelerator, Logger } from "../types.js";
import type { GuestStorage } from "../storage.js";
import { buildQemuArgs, makeMarker } from "./command-line.js";
import { microvmOptionsFor, tunedKernelArgs } from "./kernel-args.js";
import type { PidFile } from "./leftovers.js";
import { FrameDecoder, encodeFrame, shQuote, type Frame } from "./protocol.js";
import { register, unregister } from "./registry.js";

export interface VmSpawnOptions {
  kernel: string;
  initramfs: string;
  accelerator: Accelerator;
  memoryMb: number;
  vcpus: number;
  network: boolean;
  /** Root image and workspace mounts (src/sandbox/storage.ts). */
  storage?: GuestStorage;
  /** Kernel command line words; defaults to tunedKernelArgs(accelerator, vcpus, kernel). */
  kernelArgs?: string[];
  /** Extra `-M microvm,` options; defaults to microvmOptionsFor(kernel). */
  machineOptions?: string;
  /** Written into the pid file; also part of the marker. */
  runId?: string;
  stage?: string;
  attempt?: number;
  /** Directory for the pid file; none is written when absent. */
  pidDir?: string;
  qemuBinary?: string;
  /**
   * Start QEMU through `setpriv --pdeathsig KILL` so that the kernel kills it when the
   * daemon dies, even by SIGKILL. Default: whenever setpriv is available.
   */
  dieWithParent?: boolean;
  /** Start QEMU under `nice -n <nice>` (all its threads inherit it): warm-pool boots. */
  nice?: number;
  /** Serve QMP on a socket of its own (`qmpPath`): to snapshot the VM (snapshots.ts). */
  qmp?: boolean;
  /** Start from this RAM snapshot (`-incoming`) instead of booting the kernel. */
  restoreFrom?: string;
  /** More QEMU arguments, appended (benchmarks). */
  extraArgs?: string[];
  log?: Logger;
}

export interface VmProcessExit {
  exitCode: number | null;
  signal: string | null;
}

const CONSOLE_KEEP = 16 * 1024;

/**
 * A spawned QEMU process plus the host end of its channel. Frames from the guest go to
 * `onFrame`; a protocol error or channel loss goes to `onChannelError` (once).
 */
export class QemuVm {
  readonly marker: string;
  readonly startedAt = Date.now();
  private child!: ChildProcess;
  private server!: net.Server;
  private socket: net.Socket | null = null;
  private sockDir!: string;
  private qmpDir: string | null = null;
  private pidFile: string | null = null;
  private consoleTail: Buffer[] = [];
  private consoleBytes = 0;
  private decoder = new FrameDecoder();
  private exitInfo: VmProcessExit | null = null;
  private exitWaiters: Array<(e: VmProcessExit) => void> = [];
  private stopPromise: Promise<VmProcessExit & { killed: boolean }> | null = null;
  private writeQueue: Buffer[] = [];
  private channelFailed: Error | null = null;
  private outputDone = false;
  private outputWaiters: Array<() => void> = [];

  onFrame: (f: Frame) => void = () => {};
  onChannelError: (e: Error) => void = () => {};
  onExit: (e: VmProcessExit) => void = () => {};

  private constructor(private readonly opts: VmSpawnOptions) {
    this.marker = makeMarker(opts.runId, opts.stage, opts.attempt);
  }

  static async spawn(opts: VmSpawnOptions): Promise<QemuVm> {
    const vm = new QemuVm(opts);
    await vm.start();
    return vm;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get exited(): VmProcessExit | null {
    return this.exitInfo;
  }

  /** Last kernel-console / QEMU output, for error messages. */
  consoleText(maxChars = 2000): string {
    const s = Buffer.concat(this.consoleTail).toString("utf8");
    return s.slice(-maxChars).trim();
  }

  private async start(): Promise<void> {
    const o = this.opts;
    // Short path: Unix socket paths are limited to 107 bytes.
    this.sockDir = await mkdtemp(path.join(os.tmpdir(), "vbxq-"));
    const socketPath = path.join(this.sockDir, "ch.sock");
    this.server = net.createServer({ pauseOnConnect: false });
    this.server.maxConnections = 1;
    this.server.on("connection", (s) => this.attach(s));
    this.server.on("error", (e) => this.failChannel(new Error(`channel listener: ${e.message}`)));
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(socketPath, () => {
        this.server.off("error", reject);
        resolve();
      });
    });

    const args = buildQemuArgs({
      kernel: o.kernel,
      initramfs: o.initramfs,
      accelerator: o.accelerator,
      memoryMb: o.memoryMb,
      vcpus: o.vcpus,
      network: o.network,
      storage: o.storage,
      kernelArgs: o.kernelArgs ?? tunedKernelArgs(o.accelerator, o.vcpus, o.kernel),
      machineOptions: o.machineOptions ?? microvmOptionsFor(o.kernel),
      marker: this.marker,
      socketPath,
    });
    if (o.qmp) {
      this.qmpDir = await mkdtemp(path.join(os.tmpdir(), "vbxm-"));
      args.push("-qmp", `unix:${path.join(this.qmpDir, "qmp.sock")},server=on,wait=off`);
    }
    // exec: QEMU runs it through /bin/sh, so the path is quoted.
    if (o.restoreFrom) args.push("-incoming", `exec:cat ${shQuote(o.restoreFrom)}`);
    args.push(...(o.extraArgs ?? []));
    const qemu = o.qemuBinary ?? "qemu-system-x86_64";
    // setpriv sets PR_SET_PDEATHSIG and execs QEMU: the pid (and, once exec'd, the
    // cmdline killLeftoverVms checks) is QEMU's. The death signal follows the thread
    // that forked, and Node spawns from the main thread, which lives as long as the daemon.
    const [cmd0, argv0] = (o.dieWithParent ?? dieWithParentAvailable()) ? [SETPRIV, ["--pdeathsig", "KILL", "--", qemu, ...args]] : [qemu, args];
    const [cmd, argv] = o.nice ? ["nice", ["-n", String(o.nice), cmd0, ...argv0]] : [cmd0, argv0];
    const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    register(this);
    const keep = (b: Buffer) => {
      this.consoleTail.push(b);
      this.consoleBytes += b.length;
      while (this.consoleBytes > CONSOLE_KEEP && this.consoleTail.length > 1) {
        this.consoleBytes -= this.consoleTail.shift()!.length;
      }
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    child.on("error", (e) => {
      keep(Buffer.from(`\nspawn error: ${e.message}\n`));
      // 'exit' may not follow a spawn failure.
      if (!child.pid) this.handleExit({ exitCode: null, signal: null });
    });
    child.on("exit", (code, signal) => this.handleExit({ exitCode: code, signal: signal ?? null }));
    // 'close' follows 'exit' once QEMU's stdout/stderr are drained (its last error message).
    child.on("close", () => {
      this.outputDone = true;
      for (const w of this.outputWaiters) w();
      this.outputWaiters = [];
    });

    if (o.pidDir && child.pid) {
      try {
        mkdirSync(o.pidDir, { recursive: true });
        this.pidFile = path.join(o.pidDir, `${this.marker}.json`);
        const info: PidFile = {
          pid: child.pid,
          runId: o.runId ?? "",
          stage: o.stage ?? "",
          startedAt: new Date(this.startedAt).toISOString(),
          marker: this.marker,
        };
        writeFileSync(this.pidFile, JSON.stringify(info) + "\n");
      } catch (e) {
        o.log?.warn({ err: String(e), pidDir: o.pidDir }, "cannot write micro-VM pid file");
        this.pidFile = null;
      }
    }
  }

  private attach(s: net.Socket): void {
    if (this.socket) {
      s.destroy();
      return;
    }
    this.socket = s;
    // Nobody else may connect to the guest's channel.
    this.server.close();
    rm(this.sockDir, { recursive: true, force: true }).catch(() => undefined);
    s.on("data", (chunk: Buffer) => {
      if (this.channelFailed) return;
      let frames: Frame[];
      try {
        frames = this.decoder.push(chunk);
      } catch (e) {
        this.failChannel(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      for (const f of frames) this.onFrame(f);
    });
    s.on("error", () => undefined);
    s.on("close", () => {
      if (!this.channelFailed) {
        try {
          this.decoder.end();
        } catch (e) {
          this.failChannel(e as Error);
          return;
        }
        this.failChannel(new Error("guest channel closed"));
      }
    });
    for (const b of this.writeQueue) s.write(b);
    this.writeQueue = [];
  }

  private failChannel(e: Error): void {
    if (this.channelFailed) return;
    this.channelFailed = e;
    this.onChannelError(e);
  }

  /** Queue a frame to the guest. Throws ProtocolError for an unencodable frame. */
  send(type: string, id: number, arg: number, payload?: Buffer): void {
    const frame = encodeFrame(type, id, arg, payload);
    if (this.exitInfo || this.channelFailed) return;
    if (this.socket) this.socket.write(frame);
    else this.writeQueue.push(frame);
  }

  private handleExit(e: VmProcessExit): void {
    if (this.exitInfo) return;
    this.exitInfo = e;
    unregister(this);
    this.cleanupFiles();
    this.socket?.destroy();
    try {
      this.server.close();
    } catch {
      // ignore
    }
    for (const w of this.exitWaiters) w(e);
    this.exitWaiters = [];
    this.onExit(e);
  }

  /** The QMP socket (spawned with `qmp: true`), or null. */
  get qmpPath(): string | null {
    return this.qmpDir && path.join(this.qmpDir, "qmp.sock");
  }

  private cleanupFiles(): void {
    for (const p of [this.pidFile, this.sockDir, this.qmpDir]) {
      if (!p) continue;
      try {
        rmSync(p, { recursive: true, force: true });
      } catch {
        // ignore
      }
    }
    this.pidFile = null;
    this.qmpDir = null;
  }

  /** Resolves once QEMU's output pipes are drained (so consoleText() is complete), or after timeoutMs. */
  waitOutput(timeoutMs: number): Promise<void> {
    if (this.outputDone) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, Math.max(0, timeoutMs));
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.outputWaiters.push(done);
    });
  }

  /** Resolves with the exit once QEMU is reaped, or null after timeoutMs. */
  waitExit(timeoutMs: number): Promise<VmProcessExit | null> {
    if (this.exitInfo) return Promise.resolve(this.exitInfo);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.exitWaiters = this.exitWaiters.filter((w) => w !== done);
        resolve(null);
      }, Math.max(0, timeoutMs));
      const done = (e: VmProcessExit) => {
        clearTimeout(t);
        resolve(e);
      };
      this.exitWaiters.push(done);
    });
  }

  /** Every thread back to nice 0 (after a niced boot); false when not permitted (needs CAP_SYS_NICE). */
  renice(priority = 0): boolean {
    if (this.exitInfo || !this.child.pid) return false;
    try {
      for (const tid of readdirSync(`/proc/${this.child.pid}/task`)) os.setPriority(Number(tid), priority);
      return true;
    } catch {
      return false;
    }
  }

  kill(): void {
    if (this.exitInfo) return;
    try {
      this.child.kill("SIGKILL");
    } catch {
      // ignore
    }
  }

  /** Synchronous last resort for process 'exit'. */
  killSync(): void {
    if (this.exitInfo || !this.child.pid) return;
    try {
      process.kill(this.child.pid, "SIGKILL");
    } catch {
      // ignore
    }
    this.cleanupFiles();
  }

  /**
   * Ask the guest to power off; SIGKILL after graceMs. Resolves once QEMU is reaped
   * (bounded: gives up waiting 5 s after the SIGKILL). Idempotent.
   */
  stop(graceMs: number): Promise<VmProcessExit & { killed: boolean }> {
    if (this.stopPromise) return this.stopPromise;
    this.stopPromise = (async () => {
      if (this.exitInfo) return { ...this.exitInfo, killed: false };
      try {
        this.send("POWEROFF", 0, 0);
      } catch {
        // ignore
      }
      let e = await this.waitExit(Math.max(0, graceMs));
      if (e) return { ...e, killed: false };
      this.kill();
      e = await this.waitExit(5000);
      if (!e) {
        this.opts.log?.error({ pid: this.pid, marker: this.marker }, "micro-VM did not exit after SIGKILL");
        this.cleanupFiles();
        return { exitCode: null, signal: "SIGKILL", killed: true };
      }
      return { ...e, killed: true };
    })();
    return this.stopPromise;
  }
}

const SETPRIV = "setpriv";
let setprivWorks: boolean | undefined;
/** Whether util-linux's `setpriv` runs and knows --pdeathsig (checked once per process). */
function dieWithParentAvailable(): boolean {
  setprivWorks ??= spawnSync(SETPRIV, SETPRIV_CHECK, { stdio: "ignore", timeout: 10_000 }).status === 0;
  return setprivWorks;
}
const SETPRIV_CHECK = ["--pdeathsig", "KILL", "--", "true"];

/** dieWithParentAvailable() without blocking the event loop (the daemon checks it at start-up). */
export function checkDieWithParent(): Promise<boolean> {
  if (setprivWorks !== undefined) return Promise.resolve(setprivWorks);
  return new Promise((resolve) => {
    const child = spawn(SETPRIV, SETPRIV_CHECK, { stdio: "ignore", timeout: 10_000 });
    child.once("error", () => resolve((setprivWorks = false)));
    child.once("exit", (code) => resolve((setprivWorks = code === 0)));
  });
}
