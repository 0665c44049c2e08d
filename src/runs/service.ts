import type { Logger } from "pino";
import type { components } from "../../generated/api.js";
import { runEngine } from "../engine/index.js";
import { DEFAULT_POLICY, type EngineEvent, type EngineHooks, type EngineResult, type RunPolicy, type RunReport } from "../engine/types.js";
import { ApiError, notFound } from "../errors.js";
import type { IdSource } from "../ids.js";
import { encodedJson, type JsonBytes } from "../json-bytes.js";
import type { Limits } from "../limits.js";
import type { Metrics } from "../metrics.js";
import type { NodeSlots } from "../engine/node-slots.js";
import { MockSandbox } from "../sandbox/mock.js";
import type { Sandbox, VmProvider } from "../sandbox/types.js";
import { loadSpec, SpecError } from "../spec/load.js";
import type { RunSpec } from "../spec/types.js";
import type { LoadedRun, RunStore } from "../store/runs.js";
import type { StateSchemas } from "../store/schemas.js";
import { isStorageError, type StorageGuard } from "../store/storage.js";
import { adoptTerminalEvent, terminalEventOf } from "./adopt.js";
import { storedSummary, type RunSummary } from "../store/summary.js";
import { TERMINAL, type RunEvent, type RunFile, type RunState } from "../run-model.js";
import { normaliseStatus } from "../naming.js";
import { decidePublication, type StageOutputs } from "./publication.js";
import { appendOutputLines } from "./log-lines.js";
import { Run } from "./run.js";
import { stateJson } from "./state-json.js";
import { RunCache } from "./run-cache.js";
import { decodeCursor, encodeCursor, RunOrder, type OrderKey } from "./run-order.js";
import { checkInlineStorage, checkRunInputs, INLINE_SPEC_FILE, storeRunInputs, type RunInputs } from "./inline.js";
import { resolveGuestStorage, withStorage, type GuestStorage } from "../sandbox/storage.js";

type CreateRunRequest = components["schemas"]["CreateRunRequest"];
type CreateRunResponse = components["schemas"]["CreateRunResponse"];
type CancelRunResponse = components["schemas"]["CancelRunResponse"];
type RunPage = components["schemas"]["RunPage"];
type RunList = components["schemas"]["RunList"];

export interface RunServiceDeps {
  store: RunStore;
  ids: IdSource;
  now: () => number;
  log: Logger;
  vm: VmProvider;
  limits: Limits;
  /** Admission and fault reporting for state-dir writes. */
  storage: StorageGuard;
  /** Shape checks for run files read at startup (absent: not checked). */
  schemas?: StateSchemas;
  /** The node's VM slots: a create is refused while stages already wait for one. */
  slots?: NodeSlots;
  metrics?: Metrics;
  /** Told of a terminal run's files quarantined after start-up (found damaged when first read back). */
  onQuarantine?: (file: string, reason: string) => void;
}

/** Per-run execution context that is not persisted. */
interface Execution {
  outputs: Map<string, StageOutputs>;
  done: Promise<void>;
  /** The inline spec and the input, when the create carried them. */
  inputs: RunInputs;
}

/**
 * The run lifecycle (the lifecycle described in openapi.yaml's run operations): idempotent create, spec loading,
 * execution through the engine, terminal transitions, cancel, and publication.
 */
export class RunService {
  /**
   * Every run: a Run while it is active (or its terminal state is not on disk yet), else
   * its summary; a terminal run's events are read back when asked for (kept in `cache`).
   */
  private readonly runs = new Map<string, Run | RunSummary>();
  private readonly order = new RunOrder();
  private readonly cache: RunCache;
  private readonly executions = new Map<string, Execution>();
  private drainingSince: number | null = null;

  constructor(private readonly deps: RunServiceDeps) {
    this.cache = new RunCache(deps.limits.runCacheBytes);
  }

  /**
   * Loads the runs found on disk (each checked against its schema; what does not
   * conform is quarantined). A run whose log already holds its terminal event adopts
   * it; other runs that were active when the daemon died fail. The writes this needs
   * are retried when storage recovers if the state dir cannot take them now.
   */
  restore(): string[] {
    this.deps.storage.onRecovered(() => this.retryOwed());
    const { runs, stored, quarantined, reasons, interrupted } = this.deps.store.loadAll(
      (l) => this.conforming(l),
      storedSummary,
    );
    for (const id of interrupted) this.deps.log.warn({ run_id: id }, "removed a run directory left by a create interrupted before its first write");
    for (const s of stored) this.runs.set(s.id, s);
    this.order.load([...stored, ...runs.map((l) => l.file)].map((r) => ({ started_at: r.started_at, id: r.id })));
    const unindexed: RunSummary[] = [];
    for (const loaded of runs) {
      const run = new Run(loaded.file, loaded.events, this.deps, loaded.lines);
      this.runs.set(run.id, run);
      const logged = run.terminal ? undefined : terminalEventOf(run.events);
      if (logged) {
        adoptTerminalEvent(run.file, logged);
        this.deps.log.warn({ run_id: run.id, status: run.status }, "run adopted the terminal event already in its log");
      }
      let migrated = !loaded.legacy;
      this.settle(run, () => {
        if (!migrated) {
          // A Rust void-box file: migrate it to our layout once, then retire the original.
          this.deps.store.writeEvents(run.id, run.events.map((e) => JSON.stringify(e)));
          run.persist();
          this.deps.store.retireLegacy(run.id);
          migrated = true;
        }
        if (!run.terminal) {
          this.endFromOutside(run, "failed", "daemon restarted while the run was active", "daemon_restarted");
          this.deps.log.warn({ run_id: run.id }, "run failed: daemon restarted");
        } else if (logged) run.persist();
        else unindexed.push(run.summary()); // a terminal run without an up-to-date summary.json (persist writes one)
      });
      this.retire(run, false);
    }
    this.writeSummariesLater(unindexed);
    quarantined.forEach((q, i) => this.deps.log.error({ file: q, reason: reasons[i] }, "state file does not conform; quarantined"));
    return quarantined;
  }

  /**
   * Summaries for terminal runs that had none (a state dir from before them), written a
   * batch per event-loop turn after start-up so they do not delay it; best effort (the
   * next start derives what is missing again).
   */
  private writeSummariesLater(pending: RunSummary[]): void {
    const step = () => {
      for (const s of pending.splice(0, 200)) {
        try {
          this.deps.store.saveSummary(s);
        } catch {
          pending.length = 0; // the state dir refuses writes: the next start tries again
        }
      }
      if (pending.length) setImmediate(step);
    };
    if (pending.length) setImmediate(step);
  }

  /**
   * A terminal run whose state is on disk leaves memory except for its summary; its
   * events are read back when asked for (`cache` keeps the recently read ones).
   */
  private retire(run: Run, keep = true): void {
    if (!run.terminal || this.owed.has(run.id) || this.executions.has(run.id) || this.runs.get(run.id) !== run) return;
    this.runs.set(run.id, run.summary());
    if (keep) this.cache.put(run);
  }

  /**
   * Reads a terminal run back from disk, with the checks start-up applies; a damaged one
   * is quarantined (listed in /v1/health) and answered as not found, never half-served.
   */
  private readBack(summary: RunSummary, keep: boolean): Run {
    const loaded = this.readChecked(summary, keep);
    const run = new Run(loaded.file, loaded.events, this.deps, loaded.lines);
    if (keep) this.cache.put(run);
    return run;
  }

  /** A terminal run's files, checked (see readBack); `tidy`: also remove temp files a crash left. */
  private readChecked(summary: RunSummary, tidy: boolean): LoadedRun {
    try {
      const loaded = this.conforming(this.deps.store.loadRun(summary.id, tidy));
      if (!TERMINAL.has(loaded.file.status)) throw new Error(`run.json: status ${loaded.file.status} is not terminal, unlike its summary.json`);
      return loaded;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== undefined && code !== "ENOENT") throw e; // an I/O error, not damage: the next read tries again
      this.runs.delete(summary.id);
      this.order.remove(summary.id);
      this.cache.delete(summary.id);
      if (code === "ENOENT") {
        this.deps.log.error({ run_id: summary.id }, "a terminal run's files are gone from the state dir");
        throw notFound(`run ${summary.id}`);
      }
      const reason = e instanceof Error ? e.message : String(e);
      const file = this.deps.store.quarantineRun(summary.id, e);
      this.deps.log.error({ file, reason }, "state file does not conform; quarantined");
      this.deps.onQuarantine?.(file, reason);
      throw new ApiError("NOT_FOUND", `run ${summary.id} not found: its files are damaged and were quarantined (${file}; see /v1/health)`);
    }
  }

  /** Normalises a run read from disk and checks it against the schemas; throws (→ quarantine) when it does not conform. */
  private conforming(loaded: LoadedRun): LoadedRun {
    const schemas = this.deps.schemas;
    const bad = (what: string, problem: string | null) => {
      if (problem) throw new Error(`${what}: ${problem}`);
    };
    const file = loaded.file;
    if (typeof file.status === "string") file.status = normaliseStatus(file.status) as RunState["status"];
    const events = loaded.events;
    // Files unchanged since they were written or last checked (their summary.json says so)
    // are only parsed: checking every event of every run made a full listing 5× slower.
    if (schemas && !loaded.unchanged) {
      bad("run file", schemas.runFile(file));
      events.forEach((e, i) => bad(`event ${i}`, schemas.event(e)));
    }
    return { ...loaded, file, events };
  }

  /**
   * Runs whose state on disk lags what they must record (a terminal event or run.json
   * that could not be written): each has one owed task, retried when storage recovers.
   */
  private readonly owed = new Map<string, () => void>();

  /** Runs `task` now; if the state dir cannot take it, owes it (retried on recovery). */
  private settle(run: Run, task: () => void): void {
    try {
      task();
      if (this.owed.get(run.id) === task) this.owed.delete(run.id); // unless the task owes something new itself
    } catch (e) {
      if (!isStorageError(e)) {
        this.owed.delete(run.id);
        this.deps.log.error({ err: e, run_id: run.id }, "unexpected error while recording a run's state");
        return;
      }
      this.deps.storage.fault(e);
      this.owed.set(run.id, task);
    }
  }

  private retryOwed(): void {
    for (const [id, task] of [...this.owed]) {
      const run = this.runs.get(id);
      if (run instanceof Run) {
        this.settle(run, task);
        this.retire(run);
      }
    }
  }

  /**
   * The owner of every failed write of a run's execution: the run's work is stopped and
   * the run fails with the storage error as its reason, as soon as that can be recorded.
   * Until then it is not terminal (a terminal state is only served once it is durable).
   */
  private storageFault(run: Run, e: unknown): void {
    const err = this.deps.storage.fault(e);
    if (!isStorageError(e)) {
      // Not a storage error: a bug. Fail the run with it rather than leave it hanging.
      this.deps.log.error({ err: e, run_id: run.id }, "unexpected error in a run's execution");
    }
    const reason = isStorageError(e) ? `state storage failed: ${err.message}` : `internal error: ${err.message}`;
    if (!run.abort.signal.aborted) run.abort.abort(new Error(reason));
    this.settle(run, () => {
      if (!run.terminal) {
        this.endFromOutside(run, "failed", reason, isStorageError(e) ? "storage_error" : "internal_error");
        this.deps.log.warn({ run_id: run.id, reason }, "run failed");
      } else run.persist();
    });
  }

  get(id: string): Run {
    const entry = this.runs.get(id);
    if (!entry) throw notFound(`run ${id}`);
    if (entry instanceof Run) return entry;
    return this.cache.get(id) ?? this.readBack(entry, true);
  }

  private matches(entry: Run | RunSummary, filter: "active" | "terminal" | undefined): boolean {
    return !filter || TERMINAL.has(entry.status) === (filter === "terminal");
  }

  /**
   * Every run matching `filter`, oldest first, with its events: terminal runs are read
   * back one by one (not kept: a full listing would only churn the cache).
   */
  list(filter: "active" | "terminal" | undefined): Run[] {
    const out: Run[] = [];
    for (const { id } of this.order.slice()) {
      const entry = this.runs.get(id);
      if (!entry || !this.matches(entry, filter)) continue;
      if (entry instanceof Run) out.push(entry);
      else {
        try {
          out.push(this.cache.get(id) ?? this.readBack(entry, false));
        } catch (e) {
          if (!(e instanceof ApiError && e.code === "NOT_FOUND")) throw e;
          // quarantined (or gone) just now: not listed, like a run quarantined at start-up
        }
      }
    }
    return out;
  }

  /**
   * The whole `GET /v1/runs` reply (`{"runs": [RunState…]}`), encoded one run at a time:
   * a terminal run that is not in memory is read, encoded and dropped (its events are
   * spliced in as the lines of its log, which are each event's JSON), so a listing of a
   * long history does not hold every run's events as objects at once.
   */
  listJson(filter: "active" | "terminal" | undefined, v2: boolean): JsonBytes<RunList> {
    const parts: Buffer[] = [Buffer.from('{"runs":[')];
    for (const { id } of this.order.slice()) {
      const entry = this.runs.get(id);
      if (!entry || !this.matches(entry, filter)) continue;
      let json: string;
      const live = entry instanceof Run ? entry : this.cache.get(id);
      if (live || v2) json = JSON.stringify((live ?? this.tryReadBack(entry as RunSummary))?.toState(v2) ?? null);
      else {
        try {
          json = stateJson(this.readChecked(entry as RunSummary, false));
        } catch (e) {
          if (!(e instanceof ApiError && e.code === "NOT_FOUND")) throw e;
          continue; // quarantined (or gone) just now: not listed, like a run quarantined at start-up
        }
      }
      if (json === "null") continue;
      parts.push(Buffer.from(parts.length > 1 ? "," + json : json));
    }
    parts.push(Buffer.from("]}"));
    return encodedJson(Buffer.concat(parts));
  }

  private tryReadBack(summary: RunSummary): Run | null {
    try {
      return this.readBack(summary, false);
    } catch (e) {
      if (e instanceof ApiError && e.code === "NOT_FOUND") return null;
      throw e;
    }
  }

  /** At most `limit` runs after `cursor` (a previous page's next_cursor), as summaries: no file is read. */
  page(filter: "active" | "terminal" | undefined, limit: number, cursor: string | undefined): RunPage {
    const runs: RunSummary[] = [];
    let last: OrderKey | undefined;
    for (let i = this.order.after(cursor === undefined ? null : decodeCursor(cursor)); i < this.order.length; i++) {
      const key = this.order.at(i)!;
      const entry = this.runs.get(key.id);
      if (!entry || !this.matches(entry, filter)) continue;
      if (runs.length === limit) return { runs, next_cursor: encodeCursor(last!) };
      runs.push(entry instanceof Run ? entry.summary() : entry);
      last = key;
    }
    return { runs, next_cursor: null };
  }

  /** Synchronous up to the insert, so concurrent creates with one run_id start one run. */
  create(req: CreateRunRequest): CreateRunResponse {
    const inputs = checkRunInputs(req, this.deps.limits);
    if (inputs.inline) checkInlineStorage(inputs.inline.spec, this.deps.store.stateDir, this.deps.limits);
    if (req.run_id !== undefined) {
      const existing = this.runs.get(req.run_id);
      if (existing) {
        if (!(existing instanceof Run) || existing.terminal) throw new ApiError("ALREADY_TERMINAL", `run ${existing.id} is already terminal (${existing.status})`);
        return { run_id: existing.id, attempt_id: existing.file.attempt_id, state: existing.status };
      }
    }
    this.checkAccepting();
    this.deps.storage.admit("new runs");
    let id = req.run_id ?? this.deps.ids.runId();
    while (this.runs.has(id)) id = this.deps.ids.runId();
    const now = new Date(this.deps.now()).toISOString();
    const policy: RunPolicy | null = req.policy ? { ...DEFAULT_POLICY, ...req.policy } : null;
    const file = inputs.inline ? INLINE_SPEC_FILE : req.file!;
    const run = new Run(
      {
        id,
        status: "running",
        file,
        report: null,
        error: null,
        attempt_id: 1,
        started_at: now,
        updated_at: now,
        finished_at: null,
        terminal_reason: null,
        terminal_event_id: null,
        exit_code: null,
        policy,
        sandbox_mode: null,
        stages: [],
        artifact_publication: null,
      },
      [],
      this.deps,
    );
    // The run.json rename is the commit: before it, a crash or a failed write leaves only a
    // directory without run.json, which is removed (here, or at the next start). Nothing
    // is in memory until the run is durable, so a failed create leaves no trace.
    try {
      storeRunInputs(this.deps.store, id, inputs);
      run.append({ type: "run.started", message: `run created for ${file}` });
      run.append({ type: "env.provisioned", message: `environment env-${id} provisioned`, environment_id: `env-${id}` });
      run.persist();
    } catch (e) {
      this.deps.store.discardRun(id);
      throw this.deps.storage.fault(e);
    }
    this.runs.set(id, run);
    this.order.add({ started_at: now, id });
    this.deps.log.info({ run_id: id, file, status: "running" }, "run created");
    const exec: Execution = { outputs: new Map(), done: Promise.resolve(), inputs };
    this.executions.set(id, exec);
    exec.done = this.execute(run, exec, policy ?? DEFAULT_POLICY)
      .catch((e: unknown) => this.storageFault(run, e)) // every write of the execution has this owner
      .finally(() => {
        this.executions.delete(id);
        this.retire(run);
      });
    return { run_id: id, attempt_id: run.file.attempt_id, state: run.status };
  }

  /**
   * Whether this node takes a new run: not while it drains, nor while stages already
   * wait for a micro-VM slot (every slot or all guest memory is taken). The spec is not
   * read yet at this point, so the rule holds for every run; it only applies when the
   * daemon has micro-VMs (without them nothing ever waits).
   */
  refusal(): string | null {
    if (this.drainingSince !== null) return "this node is draining: it accepts no new runs (retry on another node)";
    const slots = this.deps.slots;
    if (slots?.saturated()) {
      const u = slots.usage();
      return `this node is at capacity: ${u.vms}/${slots.maxVms} micro-VMs and ${u.memoryMib}/${slots.maxMemoryMib} MiB of guest memory in use, ${u.waiting} stage(s) already waiting for a VM (retry later or on another node)`;
    }
    return null;
  }

  private checkAccepting(): void {
    const why = this.refusal();
    if (why) throw new ApiError("RESOURCE_LIMIT_EXCEEDED", why);
  }

  get draining(): boolean {
    return this.drainingSince !== null;
  }

  activeCount(): number {
    let n = 0;
    for (const r of this.runs.values()) if (r instanceof Run && !r.terminal) n++;
    return n;
  }

  /** Stops accepting new runs; active ones go on. Idempotent. */
  startDrain(): void {
    this.drainingSince ??= this.deps.now();
  }

  /** Resolves true once no execution is left (every VM of every run stopped), false after `timeoutMs`. */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    try {
      while (this.executions.size) {
        const idle = Promise.allSettled([...this.executions.values()].map((e) => e.done)).then(() => true as const);
        if (!(await Promise.race([idle, deadline]))) return false;
      }
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  private async execute(run: Run, exec: Execution, policy: RunPolicy): Promise<void> {
    let spec: RunSpec;
    try {
      spec = exec.inputs.inline?.spec ?? (await loadSpec(run.file.file, { roots: this.deps.limits.specRoots }));
    } catch (e) {
      const reason = e instanceof SpecError ? e.message : `cannot load spec: ${(e as Error).message}`;
      if (run.terminal || run.abort.signal.aborted) return;
      run.append({ type: "spec.parse_failed", level: "error", message: reason });
      return this.fail(run, reason);
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
      storage = resolveGuestStorage(spec.sandbox, { stateDir: this.deps.store.stateDir, mountRoots: this.deps.limits.mountRoots }, exec.inputs.inline ? "body/spec/sandbox" : `spec ${run.file.file}: sandbox`);
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      return this.fail(run, e.message);
    }
    const picked = this.pickSandbox(run, spec);
    const sandbox = picked && withStorage(picked, storage);
    if (!sandbox) return this.fail(run, `sandbox mode local requires micro-VMs, which are unavailable: ${this.deps.vm.unavailableReason}`);
    let result: EngineResult;
    try {
      result = await runEngine({ runId: run.id, spec, policy, sandbox, signal: run.abort.signal, hooks: this.hooks(run, exec), now: this.deps.now, limits: this.deps.limits, input: exec.inputs.input });
    } catch (e) {
      return this.fail(run, (e as Error).message);
    }
    if (run.abort.signal.aborted) return; // stopped from outside (cancel, storage fault): that path records the end
    this.finishExecution(run, exec, result);
  }

  private fail(run: Run, reason: string): void {
    // Aborted: ended (cancel) or stopped by a fault whose owner records the end.
    if (run.terminal || run.abort.signal.aborted) return;
    this.terminate(run, "failed", { type: "run.failed", level: "error", message: reason }, { reason, error: reason });
    run.persist();
  }

  private pickSandbox(run: Run, spec: RunSpec): Sandbox | null {
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
   * Engine callbacks; after a terminal transition (cancel) or a storage fault everything
   * late is dropped. A failed write never reaches the engine: storageFault owns it.
   */
  private hooks(run: Run, exec: Execution): EngineHooks {
    const live = () => !run.terminal && !run.abort.signal.aborted;
    const owned = (fn: () => void) => {
      try {
        fn();
      } catch (e) {
        this.storageFault(run, e);
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
          return this.storageFault(run, e);
        }
        exec.outputs.set(stage, { result, artifacts: artifacts.map((a) => ({ name: a.name, media_type: a.media_type, size_bytes: a.bytes.length })) });
      },
    };
  }

  private finishExecution(run: Run, exec: Execution, result: EngineResult): void {
    if (run.terminal) return;
    // A workflow's output step is also published under the stage name `main`: the same files (hard links), not copies.
    if (result.report.kind === "workflow" && result.publishStage && exec.outputs.has(result.publishStage) && result.publishStage !== "main") {
      const out = exec.outputs.get(result.publishStage)!;
      try {
        this.deps.store.aliasStage(run.id, result.publishStage, "main", out.artifacts.map((a) => a.name));
        exec.outputs.set("main", out);
      } catch (e) {
        // The output step's own files are published; `main` is only missing from the manifest.
        this.deps.log.error({ run_id: run.id, err: String(e) }, "cannot publish the output step as main");
      }
    }
    const { problem } = this.publication(run, exec, result);
    const fields = { report: result.report, exit_code: result.exitCode };
    if (result.report.success && !problem) {
      this.terminate(run, "succeeded", { type: "run.finished", message: "run succeeded", payload: { exit_code: result.exitCode } }, { ...fields, reason: null });
    } else {
      const error = result.report.success ? problem! : (result.error ?? "execution reported unsuccessful result");
      this.terminate(
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

  private publication(run: Run, exec: Execution, result?: EngineResult) {
    const outcome = decidePublication({
      runId: run.id,
      outputs: exec.outputs,
      publishStage: result?.publishStage,
      mustPublish: result?.mustPublish ?? false,
      now: new Date(this.deps.now()).toISOString(),
    });
    run.file.artifact_publication = outcome.publication;
    return outcome;
  }

  /**
   * The one way into a terminal state, and the only writer of `terminal_reason`: the
   * publication is decided (`republish`: again, from the outputs so far), then the
   * terminal event is appended — the commit point — with the terminal fields. The
   * caller persists (once, after what follows it).
   */
  private terminate(
    run: Run,
    status: "succeeded" | "failed" | "cancelled",
    event: EngineEvent,
    o: { reason: string | null; error?: string | null; report?: RunReport; exit_code?: number | null; republish?: boolean },
  ): void {
    const exec = this.executions.get(run.id);
    if (exec && (o.republish || !run.file.artifact_publication)) this.publication(run, exec);
    const { reason, republish: _, ...fields } = o;
    run.finish(status, event, { ...fields, terminal_reason: reason });
    this.deps.log.info({ run_id: run.id, status, exit_code: run.file.exit_code, error: run.file.error, reason }, `run ${status}`);
  }

  /**
   * Ends an active run from outside its execution (cancel, shutdown, restart):
   * queued stages skipped, running ones failed, the terminal event, durable on
   * return; then the engine's work is stopped (its late results are dropped).
   */
  private endFromOutside(run: Run, status: "failed" | "cancelled", why: string, terminalReason: string): void {
    run.abortStages(why);
    const event: EngineEvent =
      status === "cancelled"
        ? { type: "run.cancelled", level: "warn", message: `run cancelled: ${terminalReason}`, payload: { reason: terminalReason } }
        : { type: "run.failed", level: "error", message: why, payload: { error: why, reason: terminalReason } };
    this.terminate(run, status, event, { reason: terminalReason, error: status === "failed" ? why : run.file.error, republish: true });
    // The terminal event is in the log (the commit); run.json may lag: then it is owed.
    if (!run.abort.signal.aborted) run.abort.abort(new Error(why));
    this.settle(run, () => run.persist());
  }

  /** A stage's result.json as its stage wrote it, or null (none). */
  stageResult(runId: string, stage: string): Buffer | null {
    return this.deps.store.readResult(runId, stage);
  }

  /** A stored artifact of a stage, or null (none by that name). */
  stageArtifact(runId: string, stage: string, name: string): Buffer | null {
    return this.deps.store.readArtifact(runId, stage, name);
  }

  /** Cancel (as openapi.yaml's cancelRun describes it): durable before it returns; stops the run's work. */
  cancel(id: string, reason: string | undefined): CancelRunResponse {
    const run = this.get(id);
    if (!run.terminal) {
      const why = reason ?? "run marked cancelled";
      const end = () => {
        if (!run.terminal) this.endFromOutside(run, "cancelled", "run cancelled", why);
        else run.persist();
      };
      try {
        end();
      } catch (e) {
        if (!isStorageError(e)) throw e;
        // Not acknowledged (507), but not half-done either: the work stops now and the
        // cancellation is recorded as soon as the state dir takes it (a retry confirms).
        if (!run.abort.signal.aborted) run.abort.abort(new Error("run cancelled"));
        this.owed.set(run.id, end);
        throw this.deps.storage.fault(e);
      }
    }
    return { run_id: run.id, state: run.status, terminal_event_id: run.file.terminal_event_id };
  }

  /**
   * Daemon shutdown: every active run fails (durably, terminal_reason
   * "daemon_shutdown") and its work is stopped; waits for executions to wind down.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    for (const run of this.runs.values()) {
      if (!(run instanceof Run) || run.terminal) continue;
      try {
        this.endFromOutside(run, "failed", "daemon shut down while the run was active", "daemon_shutdown");
      } catch (e) {
        // Not recorded (storage): the next start fails it as daemon_restarted.
        run.abort.abort(e);
        this.deps.log.error({ err: e, run_id: run.id }, "could not record the run's failure at shutdown");
      }
    }
    const all = Promise.allSettled([...this.executions.values()].map((e) => e.done));
    await Promise.race([all, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }
}
