import type { Logger } from "pino";
import type { components } from "../../generated/api.js";
import type { NodeSlots } from "../engine/node-slots.js";
import { DEFAULT_POLICY, type EngineEvent, type RunPolicy } from "../engine/types.js";
import { ApiError } from "../errors.js";
import type { IdSource } from "../ids.js";
import type { JsonBytes } from "../json-bytes.js";
import type { Limits } from "../limits.js";
import type { Metrics } from "../metrics.js";
import type { VmProvider } from "../sandbox/types.js";
import type { RunStore } from "../store/runs.js";
import type { StateSchemas } from "../store/schemas.js";
import { isStorageError, type StorageGuard } from "../store/storage.js";
import type { RunSummary } from "../store/summary.js";
import { adoptTerminalEvent, terminalEventOf } from "./adopt.js";
import { Execution, type TerminalFields } from "./execution.js";
import { RunHistory, type RunFilter } from "./history.js";
import { checkInlineStorage, checkRunInputs, INLINE_SPEC_FILE, storeRunInputs } from "./inline.js";
import { Run } from "./run.js";

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

/**
 * The run lifecycle (the lifecycle described in openapi.yaml's run operations): idempotent
 * create, execution (`Execution`, runs/execution.ts), terminal transitions, cancel, drain
 * and shutdown, and the writes owed while the state dir refuses them. The runs themselves,
 * listing and reading back are `RunHistory`'s (runs/history.ts).
 */
export class RunService {
  private readonly history: RunHistory;
  private readonly executions = new Map<string, Execution>();
  private drainingSince: number | null = null;

  constructor(private readonly deps: RunServiceDeps) {
    this.history = new RunHistory({ ...deps, runCacheBytes: deps.limits.runCacheBytes });
  }

  /**
   * Loads the runs found on disk (each checked against its schema; what does not
   * conform is quarantined). A run whose log already holds its terminal event adopts
   * it; other runs that were active when the daemon died fail. The writes this needs
   * are retried when storage recovers if the state dir cannot take them now.
   */
  restore(): string[] {
    this.deps.storage.onRecovered(() => this.retryOwed());
    const { runs, quarantined } = this.history.load();
    const unindexed: RunSummary[] = [];
    for (const { run, legacy } of runs) {
      const logged = run.terminal ? undefined : terminalEventOf(run.events);
      if (logged) {
        adoptTerminalEvent(run.file, logged);
        this.deps.log.warn({ run_id: run.id, status: run.status }, "run adopted the terminal event already in its log");
      }
      let migrated = !legacy;
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
    this.history.writeSummariesLater(unindexed);
    return quarantined;
  }

  /** A terminal run leaves memory (see RunHistory.retire) once nothing is owed for it and its execution is over. */
  private retire(run: Run, keep = true): void {
    if (this.owed.has(run.id) || this.executions.has(run.id)) return;
    this.history.retire(run, keep);
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
      const run = this.history.entry(id);
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
    return this.history.get(id);
  }

  /** Every run matching `filter`, oldest first, with its events. */
  list(filter: RunFilter): Run[] {
    return this.history.list(filter);
  }

  /** The whole `GET /v1/runs` reply, encoded (RunHistory.listJson). */
  listJson(filter: RunFilter, v2: boolean): JsonBytes<RunList> {
    return this.history.listJson(filter, v2);
  }

  /** At most `limit` runs after `cursor` (a previous page's next_cursor), as summaries: no file is read. */
  page(filter: RunFilter, limit: number, cursor: string | undefined): RunPage {
    return this.history.page(filter, limit, cursor);
  }

  /** Runs held in memory with their events: as Runs (active, or terminal and not retired yet), and read back into the cache. */
  held(): { runs: number; cached: number } {
    return { runs: [...this.history.loaded()].length, cached: this.history.cachedCount };
  }

  /** Synchronous up to the insert, so concurrent creates with one run_id start one run. */
  create(req: CreateRunRequest): CreateRunResponse {
    const inputs = checkRunInputs(req, this.deps.limits);
    if (inputs.inline) checkInlineStorage(inputs.inline.spec, this.deps.store.stateDir, this.deps.limits);
    if (req.run_id !== undefined) {
      const existing = this.history.entry(req.run_id);
      if (existing) {
        if (!(existing instanceof Run) || existing.terminal) throw new ApiError("ALREADY_TERMINAL", `run ${existing.id} is already terminal (${existing.status})`);
        return { run_id: existing.id, attempt_id: existing.file.attempt_id, state: existing.status };
      }
    }
    this.checkAccepting();
    this.deps.storage.admit("new runs");
    let id = req.run_id ?? this.deps.ids.runId();
    while (this.history.entry(id)) id = this.deps.ids.runId();
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
    this.history.add(run);
    this.deps.log.info({ run_id: id, file, status: "running" }, "run created");
    const exec = new Execution(run, inputs, this.deps, {
      terminate: (r, status, event, fields) => this.terminate(r, status, event, fields),
      storageFault: (r, e) => this.storageFault(r, e),
    });
    this.executions.set(id, exec);
    exec.done = exec
      .execute(policy ?? DEFAULT_POLICY)
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
    for (const r of this.history.loaded()) if (!r.terminal) n++;
    return n;
  }

  /** Runs whose execution (engine, VMs) has not wound down yet; a cancelled run's may outlast its terminal state. */
  executingCount(): number {
    return this.executions.size;
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

  /**
   * The one way into a terminal state, and the only writer of `terminal_reason`: the
   * publication is decided (`republish`: again, from the outputs so far), then the
   * terminal event is appended — the commit point — with the terminal fields. The
   * caller persists (once, after what follows it).
   */
  private terminate(run: Run, status: "succeeded" | "failed" | "cancelled", event: EngineEvent, o: TerminalFields): void {
    const exec = this.executions.get(run.id);
    if (exec && (o.republish || !run.file.artifact_publication)) exec.publish();
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
    for (const run of [...this.history.loaded()]) {
      if (run.terminal) continue;
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
