import type { Logger } from "pino";
import { runEngine } from "../engine/index.js";
import type { EngineEvent, EngineHooks, EngineResult, RunPolicy, RunReport } from "../engine/types.js";
import type { Limits } from "../limits.js";
import type { Metrics } from "../metrics.js";
import { MockSandbox } from "../sandbox/mock.js";
import { resolveGuestStorage, withStorage, type GuestStorage } from "../sandbox/storage.js";
import type { Sandbox, VmProvider } from "../sandbox/types.js";
import { loadSpec, SpecError } from "../spec/load.js";
import type { RunSpec } from "../spec/types.js";
import type { RunStore } from "../store/runs.js";
import type { RunInputs } from "./inline.js";
import { appendOutputLines } from "./log-lines.js";
import { decidePublication, type PublicationOutcome, type StageOutputs } from "./publication.js";
import type { Run } from "./run.js";

export interface ExecutionDeps {
  store: RunStore;
  now: () => number;
  log: Logger;
  vm: VmProvider;
  limits: Limits;
  metrics?: Metrics;
}

/** How a run ends: its terminal fields besides the status (`reason` becomes terminal_reason). */
export interface TerminalFields {
  reason: string | null;
  error?: string | null;
  report?: RunReport;
  exit_code?: number | null;
  /** Decide the publication again, from the outputs so far. */
  republish?: boolean;
}

/** What an execution leaves to the run service: the one way into a terminal state, and the owner of failed writes. */
export interface ExecutionOwner {
  terminate(run: Run, status: "succeeded" | "failed" | "cancelled", event: EngineEvent, fields: TerminalFields): void;
  storageFault(run: Run, e: unknown): void;
}

/**
 * One run's execution (not persisted): the spec is loaded, the sandbox picked, the engine
 * run with hooks that turn its reports into run events, stage records and stored outputs,
 * and the outcome published. Ending the run is the owner's (`terminate`).
 */
export class Execution {
  readonly outputs = new Map<string, StageOutputs>();
  /** Settles once the engine's work (every VM of the run) has wound down. */
  done: Promise<void> = Promise.resolve();

  constructor(
    private readonly run: Run,
    /** The inline spec and the input, when the create carried them. */
    private readonly inputs: RunInputs,
    private readonly deps: ExecutionDeps,
    private readonly owner: ExecutionOwner,
  ) {}

  async execute(policy: RunPolicy): Promise<void> {
    const run = this.run;
    let spec: RunSpec;
    try {
      spec = this.inputs.inline?.spec ?? (await loadSpec(run.file.file, { roots: this.deps.limits.specRoots }));
    } catch (e) {
      const reason = e instanceof SpecError ? e.message : `cannot load spec: ${(e as Error).message}`;
      if (run.terminal || run.abort.signal.aborted) return;
      run.append({ type: "spec.parse_failed", level: "error", message: reason });
      return this.fail(reason);
    }
    if (run.terminal || run.abort.signal.aborted) return;
    run.append({ type: "run.spec.loaded", message: `spec ${spec.name} (${spec.kind}) loaded`, payload: { name: spec.name, kind: spec.kind } });

    // Runs that may use a micro-VM wait for the guest-boot probe rather than start on a
    // guess: the probe settles within its deadlines, and decides local vs. mock for auto.
    if (spec.sandbox.mode !== "mock" && this.deps.vm.ready) {
      await this.deps.vm.ready(run.abort.signal);
      if (run.terminal) return;
    }
    let storage: GuestStorage | undefined;
    try {
      storage = resolveGuestStorage(spec.sandbox, { stateDir: this.deps.store.stateDir, mountRoots: this.deps.limits.mountRoots }, this.inputs.inline ? "body/spec/sandbox" : `spec ${run.file.file}: sandbox`);
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      return this.fail(e.message);
    }
    const picked = this.pickSandbox(spec);
    const sandbox = picked && withStorage(picked, storage);
    if (!sandbox) return this.fail(`sandbox mode local requires micro-VMs, which are unavailable: ${this.deps.vm.unavailableReason}`);
    let result: EngineResult;
    try {
      result = await runEngine({ runId: run.id, spec, policy, sandbox, signal: run.abort.signal, hooks: this.hooks(), now: this.deps.now, limits: this.deps.limits, input: this.inputs.input });
    } catch (e) {
      return this.fail((e as Error).message);
    }
    if (run.abort.signal.aborted) return; // stopped from outside (cancel, storage fault): that path records the end
    this.finish(result);
  }

  private fail(reason: string): void {
    const run = this.run;
    // Aborted: ended (cancel) or stopped by a fault whose owner records the end.
    if (run.terminal || run.abort.signal.aborted) return;
    this.owner.terminate(run, "failed", { type: "run.failed", level: "error", message: reason }, { reason, error: reason });
    run.persist();
  }

  private pickSandbox(spec: RunSpec): Sandbox | null {
    const run = this.run;
    const mode = spec.sandbox.mode;
    const vm = this.deps.vm.sandbox;
    // The mock's workspace is daemon memory: bounded like a guest's tmpfs (half its RAM) and by the artifact quota.
    const mockBytes = Math.min(spec.sandbox.memory_mb * 512 * 1024, this.deps.limits.maxArtifactBytesPerStage);
    const sandbox = mode === "mock" || (mode === "auto" && !vm) ? new MockSandbox({ maxWorkspaceBytes: mockBytes }) : vm;
    run.file.sandbox_mode = sandbox?.kind === "qemu" ? "local" : sandbox ? "mock" : null;
    if (sandbox) {
      run.append({
        type: "sandbox.selected",
        message: `stages run in ${sandbox.kind === "qemu" ? "micro-VMs" : "the mock sandbox"} (mode ${mode})`,
        payload: { requested: mode, selected: run.file.sandbox_mode },
        mode: run.file.sandbox_mode ?? undefined,
      });
    }
    return sandbox;
  }

  /**
   * The engine's callbacks: where engine events become run events. After a terminal
   * transition (cancel) or a storage fault everything late is dropped. A failed write
   * never reaches the engine: the owner's storageFault takes it.
   */
  private hooks(): EngineHooks {
    const run = this.run;
    const live = () => !run.terminal && !run.abort.signal.aborted;
    const owned = (fn: () => void) => {
      try {
        fn();
      } catch (e) {
        this.owner.storageFault(run, e);
      }
    };
    return {
      event: (e) => {
        if (e.type === "stage.completed" || e.type === "stage.failed") {
          const ms = (e.payload as { duration_ms?: unknown } | null | undefined)?.duration_ms;
          if (typeof ms === "number") this.deps.metrics?.stageFinished(e.type === "stage.completed" ? "succeeded" : "failed", ms);
        }
        if (live()) owned(() => run.append(e));
      },
      planStages: (plan) => {
        if (live()) run.planStages(plan);
      },
      stage: (name, patch) => {
        if (!live()) return;
        run.patchStage(name, patch);
        if (patch.status) owned(() => run.persist());
      },
      vmDelta: (d) => {
        run.activeMicrovms += d; // live count: VMs of a cancelled run are counted until they are gone
      },
      output: (stage, result, artifacts) => {
        if (!live()) return;
        try {
          this.deps.store.writeResult(run.id, stage, result);
          for (const a of artifacts) this.deps.store.writeArtifact(run.id, stage, a.name, a.bytes);
        } catch (e) {
          return this.owner.storageFault(run, e);
        }
        this.outputs.set(stage, { result, artifacts: artifacts.map((a) => ({ name: a.name, media_type: a.media_type, size_bytes: a.bytes.length })) });
      },
    };
  }

  /** The engine is done: the run ends as its report and publication say. */
  private finish(result: EngineResult): void {
    const run = this.run;
    if (run.terminal) return;
    // A workflow's output step is also published under the stage name `main`: the same files (hard links), not copies.
    if (result.report.kind === "workflow" && result.publishStage && this.outputs.has(result.publishStage) && result.publishStage !== "main") {
      const out = this.outputs.get(result.publishStage)!;
      try {
        this.deps.store.aliasStage(run.id, result.publishStage, "main", out.artifacts.map((a) => a.name));
        this.outputs.set("main", out);
      } catch (e) {
        // The output step's own files are published; `main` is only missing from the manifest.
        this.deps.log.error({ run_id: run.id, err: String(e) }, "cannot publish the output step as main");
      }
    }
    const { problem } = this.publish(result);
    const fields = { report: result.report, exit_code: result.exitCode };
    if (result.report.success && !problem) {
      this.owner.terminate(run, "succeeded", { type: "run.finished", message: "run succeeded", payload: { exit_code: result.exitCode } }, { ...fields, reason: null });
    } else {
      const error = result.report.success ? problem! : (result.error ?? "execution reported unsuccessful result");
      this.owner.terminate(
        run,
        "failed",
        { type: "run.failed", level: "error", message: result.report.success ? error : "execution reported unsuccessful result", payload: { error, exit_code: result.exitCode } },
        { ...fields, error, reason: error },
      );
    }
    const output = result.report.output;
    if (output) appendOutputLines(run, output, this.deps.limits.maxOutputEvents);
    run.persist();
  }

  /** Decides the run's artifact_publication from the outputs so far (`result`: the engine's, once it is done). */
  publish(result?: EngineResult): PublicationOutcome {
    const outcome = decidePublication({
      runId: this.run.id,
      outputs: this.outputs,
      publishStage: result?.publishStage,
      mustPublish: result?.mustPublish ?? false,
      now: new Date(this.deps.now()).toISOString(),
    });
    this.run.file.artifact_publication = outcome.publication;
    return outcome;
  }
}
