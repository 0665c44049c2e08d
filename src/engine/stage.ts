import { isSafeId } from "../ids.js";
import { workspaceRelative } from "../sandbox/workspace.js";
import type { Limits } from "../limits.js";
import { FileTooBigError, SandboxError, capOutput, type ExecResult, type Sandbox, type StageVm } from "../sandbox/types.js";
import type { SandboxSpec } from "../spec/types.js";
import type { EngineHooks, RunPolicy, StoredArtifact } from "./types.js";
import type { Semaphore } from "./semaphore.js";
import { LiveOutput, type LiveStats } from "./live-output.js";

/** Cap on a stage's result file (artifacts are bounded per stage by the limits). */
const MAX_RESULT_BYTES = 4 * 1024 * 1024;

export interface StageJob {
  name: string;
  program: string;
  args: string[];
  env: Record<string, string>;
  stdin: Buffer;
  /** The stage's own timeout; undefined means the policy's (null: none, for services). */
  timeoutSecs?: number | null;
  box_name?: string;
  group_id?: string;
  /** Where the stage leaves its structured result, relative to /workspace (default result.json). */
  resultPath?: string;
}

export interface StageOutcome {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  /** Why the stage failed, when it did. */
  error?: string;
}

export interface StageContext {
  runId: string;
  sandbox: Sandbox;
  sandboxSpec: SandboxSpec;
  policy: RunPolicy;
  slots: Semaphore;
  hooks: EngineHooks;
  /** Aborted when the run is cancelled. */
  signal: AbortSignal;
  now: () => number;
  limits: Pick<Limits, "maxStageOutputBytes" | "maxOutputEvents" | "maxArtifactsPerStage" | "maxArtifactBytesPerStage" | "providerSecretsFile">;
  /** The run's input: stdin of the first stages (workflow roots, the agent, a pipeline's first stage). */
  input?: Buffer;
}

const CANCELLED = "run cancelled";
/** A finished guest powers off by itself in well under this; past it, it is killed. */
const POWEROFF_GRACE_MS = 1000;

/**
 * Runs one stage to its end: up to 1 + max_stage_retries attempts, each in a fresh
 * sandbox stage (a fresh micro-VM), within the parallel cap and the stage timeout.
 */
export async function runStage(ctx: StageContext, job: StageJob): Promise<StageOutcome> {
  const attempts = 1 + ctx.policy.max_stage_retries;
  let last: StageOutcome = { exitCode: -1, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), error: CANCELLED };
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (ctx.signal.aborted) return last;
    try {
      await ctx.slots.acquire(ctx.signal);
    } catch {
      return last;
    }
    try {
      last = await runAttempt(ctx, job, attempt);
    } finally {
      ctx.slots.release();
    }
    if (last.exitCode === 0 || ctx.signal.aborted) return last;
  }
  return last;
}

async function runAttempt(ctx: StageContext, job: StageJob, attempt: number): Promise<StageOutcome> {
  const { hooks } = ctx;
  const ctxFields = { stage_name: job.name, box_name: job.box_name, group_id: job.group_id };
  const started = ctx.now();
  hooks.stage(job.name, { status: "running", attempt, started_at: started, finished_at: null, exit_code: null });
  hooks.event({ type: "stage.started", message: `stage ${job.name} started (attempt ${attempt})`, payload: { stage_attempt: attempt }, ...ctxFields });

  // One controller per attempt: the run's cancel and the stage timeout both abort it.
  const attemptAbort = new AbortController();
  let timedOut = false;
  const onRunAbort = () => attemptAbort.abort(CANCELLED);
  ctx.signal.addEventListener("abort", onRunAbort, { once: true });
  const timeoutSecs = job.timeoutSecs === undefined ? ctx.policy.stage_timeout_secs : job.timeoutSecs;
  const timer =
    timeoutSecs === null
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          attemptAbort.abort("timeout");
        }, timeoutSecs * 1000);

  let vm: StageVm | undefined;
  let outcome: StageOutcome;
  try {
    vm = await ctx.sandbox.open({
      runId: ctx.runId,
      stage: job.name,
      attempt,
      memoryMb: ctx.sandboxSpec.memory_mb,
      vcpus: ctx.sandboxSpec.vcpus,
      network: ctx.sandboxSpec.network,
      kernel: ctx.sandboxSpec.kernel,
      initramfs: ctx.sandboxSpec.initramfs,
      signal: attemptAbort.signal,
    });
    outcome = await execInVm(ctx, job, attempt, vm, attemptAbort, () => timedOut, timeoutSecs);
  } catch (e) {
    outcome = { exitCode: -1, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), error: describeFailure(e, timedOut, timeoutSecs, ctx.signal) };
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener("abort", onRunAbort);
  }
  if (vm) await stopVm(ctx, job, vm);

  const finished = ctx.now();
  const duration_ms = finished - started;
  if (outcome.exitCode === 0 && !outcome.error) {
    hooks.stage(job.name, { status: "succeeded", finished_at: finished, exit_code: 0 });
    hooks.event({ type: "stage.completed", message: `stage ${job.name} succeeded`, payload: { duration_ms, exit_code: 0, stage_attempt: attempt }, ...ctxFields });
  } else {
    outcome.error ??= exitError(job, outcome);
    hooks.stage(job.name, { status: "failed", finished_at: finished, exit_code: outcome.exitCode });
    hooks.event({
      type: "stage.failed",
      level: "error",
      message: `stage ${job.name} failed: ${outcome.error}`,
      payload: { duration_ms, exit_code: outcome.exitCode, error: outcome.error, stage_attempt: attempt },
      ...ctxFields,
    });
  }
  return outcome;
}

async function execInVm(
  ctx: StageContext,
  job: StageJob,
  attempt: number,
  vm: StageVm,
  abort: AbortController,
  timedOut: () => boolean,
  timeoutSecs: number | null,
): Promise<StageOutcome> {
  if (vm.vm) {
    ctx.hooks.vmDelta(1);
    ctx.hooks.event({
      type: "microvm.spawned",
      message: vm.vm.warm
        ? `micro-VM for ${job.name} taken from the warm pool in ${vm.vm.startMs ?? 0} ms (${vm.vm.accelerator})`
        : `micro-VM for ${job.name} ${vm.vm.restored ? "restored from a snapshot" : "booted"} in ${vm.vm.bootMs} ms (${vm.vm.accelerator})`,
      payload: {
        stage: job.name,
        accelerator: vm.vm.accelerator,
        pid: vm.vm.pid,
        boot_ms: vm.vm.bootMs,
        ...(vm.vm.restored !== undefined ? { restored: vm.vm.restored } : {}),
        ...(vm.vm.warm !== undefined ? { warm: vm.vm.warm, start_ms: vm.vm.startMs ?? vm.vm.bootMs } : {}),
      },
      stage_name: job.name,
      box_name: job.box_name,
    });
  }
  // Cancel and timeout stop the VM itself, not just the program: a wedged guest must not hold the stage.
  const onAbort = () => void vm.stop(timedOut() ? 0 : ctx.policy.cancel_grace_period_secs * 1000);
  if (abort.signal.aborted) {
    // Aborted while the boot was completing: the listener below would never fire.
    onAbort();
    return { exitCode: -1, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), error: describeFailure(null, timedOut(), timeoutSecs, ctx.signal) };
  }
  abort.signal.addEventListener("abort", onAbort, { once: true });
  // The program's output as it happens: `stage.output` events, before the stage's end.
  const live = new LiveOutput({
    context: { stage_name: job.name, box_name: job.box_name, group_id: job.group_id },
    attempt,
    maxBytes: ctx.limits.maxStageOutputBytes,
    maxEvents: ctx.limits.maxOutputEvents,
    emit: (e) => ctx.hooks.event(e),
  });
  try {
    const raw = await vm.exec({
      program: job.program,
      args: job.args,
      env: job.env,
      stdin: job.stdin,
      signal: abort.signal,
      maxOutputBytes: ctx.limits.maxStageOutputBytes,
      onOutput: (stream, data) => live.push(stream, data),
    });
    const r = boundOutput(ctx, job, raw, live.finish({ stdout: raw.stdout, stderr: raw.stderr }));
    if (abort.signal.aborted) return { ...r, exitCode: r.exitCode === 0 ? -1 : r.exitCode, error: describeFailure(null, timedOut(), timeoutSecs, ctx.signal) };
    await collectOutput(ctx, job, vm);
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  } finally {
    // After a failed exec: what was pending still goes out (before the stage's end event).
    live.finish();
    abort.signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Keeps at most maxStageOutputBytes of each stream (the sandbox already should; this
 * also covers guest images that predate the cap) and says so with one
 * `stage.output_truncated` event per truncated stream — also when the output-event cap
 * stopped the live `stage.output` events before all kept bytes were sent.
 */
function boundOutput(ctx: StageContext, job: StageJob, r: ExecResult, live: LiveStats): ExecResult {
  const max = ctx.limits.maxStageOutputBytes;
  const out: ExecResult = { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  for (const [stream, key] of [["stdout", "stdout"], ["stderr", "stderr"]] as const) {
    const { kept, total } = capOutput(r[key], max, r[`${key}Bytes`]);
    out[key] = kept;
    const liveBytes = live.bytes[stream];
    if (total <= kept.length && liveBytes >= kept.length) continue;
    if (total > kept.length) out[`${key}Bytes`] = total;
    const cut = liveBytes < kept.length ? `; live output stopped after ${liveBytes} bytes (limit ${ctx.limits.maxOutputEvents} stage.output events)` : "";
    ctx.hooks.event({
      type: "stage.output_truncated",
      level: "warn",
      message:
        total > kept.length
          ? `stage ${job.name} wrote ${total} bytes to ${stream}; the first ${kept.length} were kept (limit ${max})${cut}`
          : `stage ${job.name} wrote ${total} bytes to ${stream}, all kept${cut}`,
      payload: {
        stream,
        kept_bytes: kept.length,
        total_bytes: total,
        limit_bytes: max,
        ...(cut ? { live_bytes: liveBytes, limit_events: ctx.limits.maxOutputEvents } : {}),
      },
      stage_name: job.name,
      box_name: job.box_name,
      group_id: job.group_id,
      stream,
    });
  }
  return out;
}

/** An artifact listed in result.json that was not stored, and why. */
interface DroppedArtifact {
  name: string;
  reason: "duplicate_name" | "over_count_quota" | "over_byte_quota";
  size_bytes?: number;
}

/**
 * Reads the stage's result file and the artifacts it lists, within the stage's
 * artifact quotas: at most maxArtifactsPerStage artifacts and maxArtifactBytesPerStage
 * bytes in all, each name once. What does not fit is not read from the guest at all
 * and is reported in one `stage.artifacts_dropped` event; other read problems fail the stage.
 */
async function collectOutput(ctx: StageContext, job: StageJob, vm: StageVm): Promise<void> {
  const result = await vm.readFile(job.resultPath ?? "result.json", MAX_RESULT_BYTES);
  if (!result) return;
  const { maxArtifactsPerStage: maxCount, maxArtifactBytesPerStage: maxBytes } = ctx.limits;
  const artifacts: StoredArtifact[] = [];
  const dropped: DroppedArtifact[] = [];
  let bytes = 0;
  let listed: unknown;
  try {
    listed = (JSON.parse(result.toString("utf8")) as { artifacts?: unknown })?.artifacts;
  } catch {
    listed = undefined; // malformed result.json is stored as is; publication reports it
  }
  if (Array.isArray(listed)) {
    const seen = new Set<string>();
    for (const a of listed) {
      if (!a || typeof a !== "object") continue;
      const { name, path, media_type } = a as { name?: unknown; path?: unknown; media_type?: unknown };
      if (!isSafeId(name)) continue; // never joined into a host path
      const rel = typeof path === "string" ? workspaceRelative(path) : name;
      if (rel === null) continue; // outside /workspace: never read
      if (seen.has(name)) {
        dropped.push({ name, reason: "duplicate_name" });
        continue;
      }
      seen.add(name);
      if (artifacts.length >= maxCount) {
        dropped.push({ name, reason: "over_count_quota" });
        continue;
      }
      let content: Buffer | null;
      try {
        content = await vm.readFile(rel, maxBytes - bytes);
      } catch (e) {
        if (!(e instanceof FileTooBigError)) throw e;
        dropped.push({ name, reason: "over_byte_quota", size_bytes: e.size });
        continue;
      }
      if (!content) continue;
      bytes += content.length;
      artifacts.push({ name, media_type: typeof media_type === "string" ? media_type : "application/octet-stream", bytes: content });
    }
  }
  if (dropped.length) {
    const shown = dropped.slice(0, 20);
    ctx.hooks.event({
      type: "stage.artifacts_dropped",
      level: "warn",
      message: `stage ${job.name}: ${dropped.length} listed artifact(s) not stored (quota ${maxCount} artifacts / ${maxBytes} bytes per stage; names once): ${shown.map((d) => `${d.name} (${d.reason})`).join(", ")}${dropped.length > shown.length ? ", ..." : ""}`,
      payload: {
        dropped_count: dropped.length,
        dropped: dropped.slice(0, 100),
        stored_count: artifacts.length,
        stored_bytes: bytes,
        max_artifacts: maxCount,
        max_artifact_bytes: maxBytes,
      },
      stage_name: job.name,
      box_name: job.box_name,
      group_id: job.group_id,
    });
  }
  ctx.hooks.output(job.name, result, artifacts);
}

async function stopVm(ctx: StageContext, job: StageJob, vm: StageVm): Promise<void> {
  const exit = await vm.stop(ctx.signal.aborted ? ctx.policy.cancel_grace_period_secs * 1000 : POWEROFF_GRACE_MS);
  if (!vm.vm) return;
  ctx.hooks.vmDelta(-1);
  ctx.hooks.event({
    type: "microvm.exited",
    message: `micro-VM for ${job.name} exited${exit.killed ? " (killed)" : ""}`,
    payload: { stage: job.name, accelerator: vm.vm.accelerator, pid: vm.vm.pid, boot_ms: vm.vm.bootMs, exit_code: exit.exitCode, signal: exit.signal, killed: exit.killed },
    stage_name: job.name,
    box_name: job.box_name,
  });
}

/** "exited with code N", plus the last line the program wrote to stderr (the usual reason). */
function exitError(job: StageJob, o: StageOutcome): string {
  const last = o.stderr.toString("utf8").trimEnd().split("\n").pop()?.trim();
  const why = o.exitCode === 127 ? `program ${job.program} is not available in the sandbox (exit code 127)` : `stage ${job.name} exited with code ${o.exitCode}`;
  return last ? `${why}: ${last.length > 300 ? `${last.slice(0, 297)}...` : last}` : why;
}

function describeFailure(e: unknown, timedOut: boolean, timeoutSecs: number | null, runSignal: AbortSignal): string {
  if (timedOut) return `stage timed out after ${timeoutSecs} s`;
  if (runSignal.aborted) return CANCELLED;
  if (e instanceof SandboxError) return e.message;
  return e instanceof Error ? `sandbox error: ${e.message}` : String(e);
}
