/**
 * The host side of one stage's micro-VM once it is ready: commands (EXEC with live
 * output), file reads and the stop, one request at a time over the guest channel.
 */
import {
  FileTooBigError,
  SandboxError,
  capOutput,
  type ExecCommand,
  type ExecResult,
  type StageVm,
  type VmExit,
  type VmInfo,
} from "../types.js";
import { MAX_FRAME_PAYLOAD, ProtocolError, buildExecScript, checkRelPath, type Frame } from "./protocol.js";
import type { QemuVm } from "./vm.js";

/** How long an aborted command may take to be confirmed dead by the guest. */
const ABORT_CONFIRM_MS = 5000;
/** Bound on a readFile round trip (16 MiB over virtio-serial takes well under this). */
const READ_TIMEOUT_MS = 60_000;

interface Pending {
  id: number;
  kind: "exec" | "read";
  resolve: (f: Frame[]) => void;
  reject: (e: Error) => void;
  frames: Frame[];
  /** Live output of an exec (OUTC/ERRC): handed on as it comes, never kept in `frames`. */
  chunk?: (f: Frame) => void;
}

export class QemuStageVm implements StageVm {
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
