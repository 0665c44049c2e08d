/**
 * One QEMU micro-VM process: command line, the host end of the virtio-serial channel,
 * pid files, a process-global registry of live VMs and leftover cleanup.
 *
 * Nothing here knows about stages' semantics; QemuSandbox (index.ts) drives the
 * protocol. Every wait is bounded by the caller's timeouts.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { storageArgs, type GuestStorage } from "../storage.js";
import { FrameDecoder, ProtocolError, encodeFrame, shQuote, type Frame } from "./protocol.js";

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export type Accelerator = "kvm" | "tcg";

/** Kernel arguments measured to shorten a TCG boot of the Debian cloud kernel. */
export const TUNED_KERNEL_ARGS = [
  "console=ttyS0",
  "quiet",
  "loglevel=0",
  "nokaslr",
  "i8042.noaux",
  "i8042.nokbd",
  "8250.nr_uarts=1",
  // Initcalls that cost 10-100 ms each under TCG and do nothing for us (crypto
  // self-tests, kprobe tracing, the module-signing key: our modules then load
  // unverified, which the Debian kernel allows without MODULE_SIG_FORCE).
  "initcall_blacklist=cmos_init,i8042_init,crypto_kdf108_init,init_kprobe_trace,load_system_certificate_list,init_encrypted",
  "cryptomgr.notests",
  // Registering 256 legacy BSD pty pairs took ~125 ms of the minimal kernel's boot under
  // TCG; nothing in the guest uses them (the Debian kernel has none: ignored there).
  "pty.legacy_count=0",
  "mitigations=off",
  "rodata=off",
  "init_on_alloc=0",
  "audit=0",
  "apparmor=0",
  "security=none",
  "nowatchdog",
  "random.trust_cpu=on",
  // The IO-APIC timer check and the clocksource watchdog only cost time in a TCG guest.
  "no_timer_check",
  "tsc=reliable",
  "panic=-1",
];

let tscKhzCache: number | null | undefined;
/**
 * The host TSC frequency in kHz when the host TSC is constant, else null. Under TCG
 * the guest's rdtsc is the host's, and the guest's PIT-based TSC calibration fails
 * now and then ("tsc: Unable to calibrate against PIT"), after which the Debian
 * kernel hangs in boot; `tsc_early_khz=` skips that calibration.
 */
export function hostTscKhz(): number | null {
  if (tscKhzCache !== undefined) return tscKhzCache;
  tscKhzCache = null;
  try {
    const info = readFileSync("/proc/cpuinfo", "latin1");
    const flags = /^flags\s*:(.*)$/m.exec(info)?.[1] ?? "";
    const mhz = Number(/^cpu MHz\s*:\s*([0-9.]+)/m.exec(info)?.[1]);
    if (/\bconstant_tsc\b/.test(flags) && Number.isFinite(mhz) && mhz > 100) tscKhzCache = Math.round(mhz * 1000);
  } catch {
    // not Linux, or no /proc: the guest calibrates by itself
  }
  return tscKhzCache;
}

/**
 * Added for a single-vCPU TCG guest of the minimal kernel only. `noapictimer`: the
 * local APIC timer needs a ~100 ms calibration against the PIT at boot (TCG has no
 * TSC-deadline timer); the PIT serves as the clock event device instead. Measured:
 * ~250 ms less to the first command. Not with more vCPUs, nor under KVM (TSC-deadline
 * LAPIC timer: no calibration, cheaper than the PIT), and never for the Debian cloud
 * kernel: it boots, but its timers then never fire, so the first sleep in the guest
 * (the init's output poll) hangs and no command ever finishes.
 */
export const TCG_KERNEL_ARGS = ["noapictimer"];

/** The minimal kernel (guest/kernel.config) is the one built without ACPI. */
const isMinimalKernel = (kernel: string) => microvmOptionsFor(kernel).split(",").includes("acpi=off");

/**
 * The tuned command line for this host, accelerator, vCPU count and kernel: adds
 * TCG_KERNEL_ARGS for the minimal kernel on one vCPU under TCG, and tsc_early_khz when
 * the host TSC is known.
 */
export function tunedKernelArgs(accelerator: Accelerator, vcpus: number, kernel: string): string[] {
  const khz = hostTscKhz();
  return [
    ...TUNED_KERNEL_ARGS,
    ...(accelerator === "tcg" && vcpus === 1 && isMinimalKernel(kernel) ? TCG_KERNEL_ARGS : []),
    ...(khz ? [`tsc_early_khz=${khz}`] : []),
  ];
}

/** The stock minimal command line (what the protocol strictly needs), for comparison. */
export const UNTUNED_KERNEL_ARGS = ["console=ttyS0"];

/**
 * UNTUNED_KERNEL_ARGS plus `tsc_early_khz=` when known: without it a TCG guest hangs
 * in TSC calibration often enough (most boots on a loaded host) that no baseline
 * could be measured.
 */
export function untunedKernelArgs(): string[] {
  const khz = hostTscKhz();
  return khz ? [...UNTUNED_KERNEL_ARGS, `tsc_early_khz=${khz}`] : [...UNTUNED_KERNEL_ARGS];
}

/**
 * Extra `-M microvm,...` options a kernel needs, from the `microvm-options` file next to
 * it (written by guest/build.sh): the custom kernel has no ACPI and runs with
 * `acpi=off`, so QEMU lists its virtio-mmio devices on the kernel command line. The
 * Debian cloud kernel needs ACPI for that (no file: QEMU's defaults).
 */
export function microvmOptionsFor(kernel: string): string {
  try {
    const v = readFileSync(path.join(path.dirname(kernel), "microvm-options"), "utf8").trim();
    return /^[a-z0-9-]+=[a-z0-9]+(,[a-z0-9-]+=[a-z0-9]+)*$/.test(v) ? v : "";
  } catch {
    return ""; // none (the cloud kernel), or unreadable
  }
}

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

function sanitize(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 64);
}

export function makeMarker(runId = "probe", stage = "vm", attempt = 0): string {
  return `voidbox-${sanitize(runId)}-${sanitize(stage)}-${attempt}-${randomBytes(4).toString("hex")}`;
}

export function buildQemuArgs(
  o: Pick<VmSpawnOptions, "kernel" | "initramfs" | "accelerator" | "memoryMb" | "vcpus" | "network" | "machineOptions" | "storage"> & {
    kernelArgs: string[];
    marker: string;
    socketPath: string;
  },
): string[] {
  const storage = storageArgs(o.storage);
  const append = [...o.kernelArgs, ...(o.network ? ["voidbox.net=1"] : []), ...storage.kernel].join(" ");
  const args = [
    "-name", o.marker,
    "-M", `microvm,rtc=on${o.machineOptions ? `,${o.machineOptions}` : ""}`,
    // thread=single: measured faster to boot than multi-threaded TCG on 2 host cores.
    "-accel", o.accelerator === "kvm" ? "kvm" : "tcg,thread=single",
    "-nodefaults", "-no-user-config", "-nographic",
    "-monitor", "none",
    "-serial", "stdio",
    "-no-reboot",
    "-m", String(o.memoryMb),
    "-smp", String(o.vcpus),
    "-kernel", o.kernel,
    "-initrd", o.initramfs,
    "-append", append,
    "-device", "virtio-serial-device",
    "-chardev", `socket,id=vbxch,path=${o.socketPath}`,
    "-device", "virtserialport,chardev=vbxch,name=voidbox.0",
  ];
  if (o.network) {
    args.push("-netdev", "user,id=vbxnet", "-device", "virtio-net-device,netdev=vbxnet");
  }
  args.push(...storage.qemu);
  return args;
}

// --- process-global registry ---------------------------------------------------------

const live = new Set<QemuVm>();
let exitHookInstalled = false;

function register(vm: QemuVm): void {
  live.add(vm);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Safety net: nothing asynchronous can run in 'exit', so SIGKILL synchronously.
    process.on("exit", () => {
      for (const v of live) v.killSync();
    });
  }
}

/** VMs spawned by this process that have not exited yet. */
export function liveVmCount(): number {
  return live.size;
}

/** Stop every live VM (daemon shutdown): power off, SIGKILL after graceMs. */
export async function stopAllVms(graceMs: number): Promise<number> {
  const vms = [...live];
  await Promise.all(vms.map((v) => v.stop(graceMs).catch(() => undefined)));
  return vms.length;
}

// --- pid files -----------------------------------------------------------------------

interface PidFile {
  pid: number;
  runId: string;
  stage: string;
  startedAt: string;
  marker: string;
}

function readCmdline(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter((s) => s.length > 0);
  } catch {
    return null;
  }
}

function isZombieOrGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}

/**
 * Kill QEMU processes recorded in `pidDir` (e.g. left by a crashed daemon): for each
 * pid file, SIGKILL the process only if /proc/<pid>/cmdline is a qemu-system process
 * carrying the file's marker; remove the pid file. Returns the number killed.
 * Waits (bounded, 3 s) for the killed processes to disappear.
 */
export async function killLeftoverVms(pidDir: string, log?: Logger): Promise<number> {
  let names: string[];
  try {
    names = readdirSync(pidDir).filter((n) => n.endsWith(".json"));
  } catch {
    return 0;
  }
  const killed: number[] = [];
  for (const name of names) {
    const file = path.join(pidDir, name);
    let info: PidFile | null = null;
    try {
      info = JSON.parse(readFileSync(file, "utf8")) as PidFile;
    } catch {
      info = null;
    }
    if (info && Number.isInteger(info.pid) && info.pid > 1 && typeof info.marker === "string") {
      const argv = readCmdline(info.pid);
      // Just after spawn the process may still be nice or setpriv, about to exec QEMU.
      const exe = argv?.[0] && ["setpriv", "nice"].includes(path.basename(argv[0])) ? argv.find((a) => path.basename(a).startsWith("qemu-system")) : argv?.[0];
      const isOurs = argv !== null && exe !== undefined && path.basename(exe).startsWith("qemu-system") && argv.includes(info.marker);
      if (isOurs) {
        try {
          process.kill(info.pid, "SIGKILL");
          killed.push(info.pid);
          log?.warn({ pid: info.pid, runId: info.runId, stage: info.stage, marker: info.marker }, "killed leftover micro-VM");
        } catch {
          // already gone
        }
      }
    }
    try {
      rmSync(file, { force: true });
    } catch {
      // ignore
    }
  }
  const deadline = Date.now() + 3000;
  while (killed.some((p) => !isZombieOrGone(p)) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  // Our own children: wait until they are reaped (and out of the registry).
  const ours = [...live].filter((v) => killed.includes(v.pid));
  await Promise.all(ours.map((v) => v.waitExit(Math.max(0, deadline - Date.now()))));
  return killed.length;
}

// --- the VM process --------------------------------------------------------------------

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

  get channelError(): Error | null {
    return this.channelFailed;
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
    live.delete(this);
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
export function dieWithParentAvailable(): boolean {
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

/** True when `qemu-system-x86_64` runs (found on the PATH and answers --version). */
export function qemuAvailable(binary = "qemu-system-x86_64"): boolean {
  return spawnSync(binary, ["--version"], { stdio: "ignore", timeout: 10_000 }).status === 0;
}

export { ProtocolError };
