/**
 * The Sandbox interface: the only thing the engine knows about where a stage runs.
 *
 * One `StageVm` is opened per stage attempt (a fresh micro-VM for the QEMU sandbox,
 * a view of the run's virtual /workspace for the mock). The engine then runs exactly
 * one command in it, reads back the files it needs (result.json, artifacts), and
 * stops it. Every method is bounded: callers pass timeouts or abort signals, and
 * `stop()` always resolves once nothing of the stage is left running.
 */

import type { GuestStorage } from "./storage.js";

export type SandboxKind = "mock" | "qemu";

export interface StageVmOptions {
  runId: string;
  stage: string;
  /** 1-based attempt number of this stage. */
  attempt: number;
  memoryMb: number;
  vcpus: number;
  network: boolean;
  /** Overrides for the guest image (spec `sandbox.kernel` / `sandbox.initramfs`). */
  kernel?: string;
  initramfs?: string;
  /** Root image and workspace mounts (spec `sandbox.image` / `sandbox.mounts`); the mock ignores them. */
  storage?: GuestStorage;
  /** The one endpoint the guest's network reaches (an agent's provider); replaces `network`. */
  egress?: Egress;
  /** Aborting it while the VM boots kills the boot; open() then rejects. */
  signal: AbortSignal;
  /** A warm-pool boot nobody waits for: run it at a lower CPU priority (nice). */
  background?: boolean;
}

/**
 * A guest network that reaches one TCP endpoint and nothing else: connections to
 * guestIp:guestPort are relayed to host:port (an address, resolved by the daemon).
 */
export interface Egress {
  guestIp: string;
  guestPort: number;
  host: string;
  port: number;
}

export interface ExecCommand {
  program: string;
  args: string[];
  env: Record<string, string>;
  stdin: Buffer;
  /** Aborting asks the program to stop; the engine follows with `stop(graceMs)`. */
  signal: AbortSignal;
  /**
   * Bytes of stdout (and, separately, of stderr) the sandbox hands back; the rest is
   * dropped where it is produced (in the guest) and only counted. Absent: unbounded.
   */
  maxOutputBytes?: number;
  /**
   * Called with the program's output while it runs, as the sandbox gets it: per stream,
   * in order, each call continuing where the previous ended, never past maxOutputBytes.
   * A sandbox may deliver less (or nothing, e.g. an old guest image): the caller takes
   * the rest of the kept bytes from the ExecResult.
   */
  onOutput?: (stream: OutputStream, data: Buffer) => void;
}

export type OutputStream = "stdout" | "stderr";

export interface ExecResult {
  exitCode: number;
  /** At most `maxOutputBytes` (the first bytes the program wrote). */
  stdout: Buffer;
  stderr: Buffer;
  /** How many bytes the program wrote in all, when more than were kept (absent: all kept). */
  stdoutBytes?: number;
  stderrBytes?: number;
}

/** What a stage's VM was, for `microvm.spawned` / `microvm.exited` events. */
/** How QEMU runs guests: hardware virtualisation, or TCG's emulation. */
export type Accelerator = "kvm" | "tcg";
/** What an operator asks for: `auto` picks KVM when a guest boots under it, else TCG. */
export type AccelMode = Accelerator | "auto";

/** What the sandbox logs through (pino's shape). */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface VmInfo {
  accelerator: Accelerator;
  pid: number;
  bootMs: number;
  /** Started from a RAM snapshot of a booted guest rather than by booting the kernel. */
  restored?: boolean;
  /** Taken from the warm pool (pre-booted) rather than booted for this stage attempt. */
  warm?: boolean;
  /** ms from asking for the VM to holding a ready one: the claim for a warm VM, the boot for a cold one. */
  startMs?: number;
}

export interface VmExit {
  /** Process exit code, or null when killed by a signal. */
  exitCode: number | null;
  signal: string | null;
  /** true when the VM had to be killed (did not power off by itself in time). */
  killed: boolean;
}

export interface StageVm {
  /** Present for real micro-VMs; absent for the mock (no VM is spawned). */
  readonly vm?: VmInfo;
  exec(cmd: ExecCommand): Promise<ExecResult>;
  /**
   * Read a file relative to /workspace (no `..`, no absolute paths). Resolves null
   * when it does not exist; rejects when it is larger than `maxBytes`.
   */
  readFile(relPath: string, maxBytes: number): Promise<Buffer | null>;
  /**
   * Ask the guest to stop and kill it after `graceMs`. Idempotent; resolves when
   * no process of this stage is left.
   */
  stop(graceMs: number): Promise<VmExit>;
  /** Settles once the VM's process is gone, whoever ended it (absent: the mock, nothing to watch). */
  readonly closed?: Promise<void>;
  /** Back to normal CPU priority after a background boot (best effort: raising it needs privilege). */
  foreground?(): void;
}

export interface Sandbox {
  readonly kind: SandboxKind;
  open(opts: StageVmOptions): Promise<StageVm>;
}

/** Thrown by sandboxes for failures that should fail the stage with a clear message. */
export class SandboxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SandboxError";
  }
}

/** readFile of a file larger than its `maxBytes`: nothing of it was transferred. */
export class FileTooBigError extends SandboxError {
  constructor(
    readonly relPath: string,
    readonly size: number,
    readonly maxBytes: number,
  ) {
    super(`${relPath} is ${size} bytes, over the ${maxBytes}-byte limit`);
    this.name = "FileTooBigError";
  }
}

/** Keeps the first `max` bytes of `b` (all of it when `max` is undefined); reports the full size. */
export function capOutput(b: Buffer, max: number | undefined, fullSize = b.length): { kept: Buffer; total: number } {
  const total = Math.max(fullSize, b.length);
  // A copy, so the dropped bytes can be freed.
  return { kept: max !== undefined && b.length > max ? Buffer.from(b.subarray(0, max)) : b, total };
}

/** Where micro-VM stages run, when they can. */
export interface VmProvider {
  sandbox: Sandbox | null;
  /** Why `sandbox` is null (shown in the run's error for `mode: local`). */
  unavailableReason: string;
  /**
   * Resolves once `sandbox`/`unavailableReason` are final (the daemon's guest-boot probe
   * has settled; bounded by the probe's deadlines) or `signal` aborts. Absent: final now.
   */
  ready?: (signal: AbortSignal) => Promise<void>;
}
