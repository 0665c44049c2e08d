import type { IdSource } from "../ids.js";
import { encodedJson, type JsonBytes } from "../json-bytes.js";
import type { RunStore } from "../store/runs.js";
import { EVENT_CONTEXT_KEYS, type EngineEvent, type StagePatch, type StagePlan } from "../engine/types.js";
import type { Metrics } from "../metrics.js";
import { v2EventName } from "../naming.js";
import { stageStates } from "./state-json.js";
import type { RunSummary } from "../store/summary.js";
import { TERMINAL, type RunEvent, type RunFile, type RunState, type RunStatus, type StageRecord, type StageView } from "../run-model.js";

export interface RunDeps {
  store: RunStore;
  ids: IdSource;
  now: () => number;
  metrics?: Pick<Metrics, "eventAppended" | "runFinished">;
}

const iso = (ms: number) => new Date(ms).toISOString();
const encodeV2 = (e: RunEvent) => JSON.stringify({ ...e, event_type: e.event_type_v2 });

/**
 * One run in memory: its persisted file, its events (with their serialised forms
 * cached, so serving events costs no per-request stringify), and its live counters.
 * Every mutation goes through here so the terminal guard and persistence are in one place.
 */
export class Run {
  readonly events: RunEvent[];
  private readonly legacyJson: string[] = [];
  /** Filled on first use: most runs are never read in the v2 naming. */
  private v2Json: string[] | null = null;
  /** Bytes of the serialised events (for the cache of loaded terminal runs). */
  jsonBytes = 0;
  private readonly eventIndex = new Map<string, number>();
  activeMicrovms = 0;
  /** Told after each append (event streams); each defers its own work. */
  private readonly listeners = new Set<() => void>();
  /** Aborted on cancel: stops the engine's work. */
  readonly abort = new AbortController();

  constructor(
    readonly file: RunFile,
    events: RunEvent[],
    private readonly deps: RunDeps,
    /** The events' lines as read from the log (each is JSON.stringify of its event): not encoded again. */
    lines?: string[],
  ) {
    this.events = [];
    events.forEach((e, i) => this.remember(e, lines?.[i]));
  }

  get id(): string {
    return this.file.id;
  }
  get status(): RunStatus {
    return this.file.status;
  }
  get terminal(): boolean {
    return TERMINAL.has(this.file.status);
  }
  get stages(): StageRecord[] {
    return (this.file.stages ??= []);
  }

  private remember(e: RunEvent, json: string = JSON.stringify(e)): void {
    this.eventIndex.set(e.event_id, this.events.length);
    this.events.push(e);
    this.legacyJson.push(json);
    this.jsonBytes += json.length;
    this.v2Json?.push(encodeV2(e));
  }

  private v2(): string[] {
    return (this.v2Json ??= this.events.map(encodeV2));
  }

  /** Appends an event with a full envelope; returns it; throws if it could not be written. Callers apply the terminal guard. */
  append(e: EngineEvent): RunEvent {
    const ts = this.deps.now();
    const ev: RunEvent = {
      ts_ms: ts,
      level: e.level ?? "info",
      event_type: e.type,
      message: e.message,
      run_id: this.id,
      event_id: this.deps.ids.eventId(),
      seq: this.events.length === 0 ? 0 : this.events[this.events.length - 1].seq + 1,
      attempt_id: this.file.attempt_id,
      timestamp: iso(ts),
      event_type_v2: v2EventName(e.type),
      payload: e.payload ?? null,
    };
    for (const k of EVENT_CONTEXT_KEYS) if (e[k] !== undefined) ev[k] = e[k];
    // Disk first: an event whose write failed (full or read-only state dir) is never
    // served, and the seq of the next one stays gapless.
    const json = JSON.stringify(ev);
    const t0 = process.hrtime.bigint();
    this.deps.store.appendEvent(this.id, json);
    this.deps.metrics?.eventAppended(Number(process.hrtime.bigint() - t0) / 1e9);
    this.remember(ev, json);
    this.file.updated_at = ev.timestamp;
    for (const l of this.listeners) l();
    return ev;
  }

  /**
   * Moves the run to a terminal status with `e` as its terminal event. The appended
   * event is the commit point (a restart adopts it even if run.json lags); if it
   * cannot be written this throws and the run is unchanged.
   */
  finish(status: RunStatus, e: EngineEvent, fields: Partial<Pick<RunFile, "error" | "terminal_reason" | "exit_code" | "report">>): RunEvent {
    const ev = this.append(e);
    Object.assign(this.file, fields);
    this.file.status = status;
    this.file.finished_at = ev.timestamp;
    this.file.terminal_event_id = ev.event_id;
    this.deps.metrics?.runFinished(status);
    return ev;
  }

  /** Writes run.json and fsyncs the event log: after this the state survives a crash. */
  persist(): void {
    this.deps.store.syncEvents(this.id);
    this.deps.store.saveRun(this.file);
    if (this.terminal) {
      this.deps.store.closeRun(this.id); // reopened lazily should anything follow
      try {
        this.deps.store.saveSummary(this.summary());
      } catch {
        // Only an index: without it the next start reads this run's files instead.
      }
    }
  }

  planStages(plan: StagePlan[]): void {
    this.file.stages = plan.map((p) => ({ ...p, status: "queued", attempt: 0, started_at: null, finished_at: null, exit_code: null }));
  }

  patchStage(name: string, patch: StagePatch): void {
    const s = this.stages.find((x) => x.name === name);
    if (s) Object.assign(s, patch);
  }

  /**
   * For a run stopped from outside (cancel, restart, shutdown): queued stages are
   * skipped, running ones failed with exit code -1, each with its event.
   */
  abortStages(reason: string): void {
    for (const s of this.stages) {
      // Each event before its status change: if a write fails, a retry redoes what is missing.
      if (s.status === "queued") {
        this.append({ type: "stage.skipped", message: `stage ${s.name} skipped: ${reason}`, payload: { reason }, stage_name: s.name });
        s.status = "skipped";
      } else if (s.status === "running") {
        const now = this.deps.now();
        const duration_ms = s.started_at === null ? 0 : now - s.started_at;
        this.append({
          type: "stage.failed",
          level: "error",
          message: `stage ${s.name} failed: ${reason}`,
          payload: { duration_ms, exit_code: -1, error: reason, stage_attempt: s.attempt },
          stage_name: s.name,
        });
        Object.assign(s, { status: "failed", finished_at: now, exit_code: -1 });
      }
    }
  }

  get activeStageCount(): number {
    return this.stages.filter((s) => s.status === "running").length;
  }

  /** The whole list, encoded, is kept until the next append: followers poll it repeatedly. */
  private encoded: { legacy?: Buffer; v2?: Buffer; count: number } = { count: -1 };

  /**
   * Calls `fn` after every append, synchronously (it should only schedule work: the
   * appender may be mid-transition). Returns the function that unsubscribes.
   */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Index of the first event after `eventId`; 0 when it is absent or unknown. */
  indexAfter(eventId: string | undefined): number {
    return eventId !== undefined && this.eventIndex.has(eventId) ? this.eventIndex.get(eventId)! + 1 : 0;
  }

  /** Event `i` encoded as the JSON replies carry it. */
  eventJson(i: number, v2: boolean): string {
    return (v2 ? this.v2() : this.legacyJson)[i];
  }

  eventsJson(fromEventId: string | undefined, v2: boolean): JsonBytes<RunEvent[]> {
    const start = this.indexAfter(fromEventId);
    const src = v2 ? this.v2() : this.legacyJson;
    if (start > 0) return encodedJson(Buffer.from("[" + src.slice(start).join(",") + "]"));
    if (this.encoded.count !== src.length) this.encoded = { count: src.length };
    const key = v2 ? "v2" : "legacy";
    return encodedJson((this.encoded[key] ??= Buffer.from("[" + src.join(",") + "]")));
  }

  toState(v2: boolean): RunState {
    const { stages: _, stage_states: __, ...rest } = this.file;
    return {
      ...rest,
      events: v2 ? this.events.map((e) => ({ ...e, event_type: e.event_type_v2 })) : this.events,
      active_stage_count: this.activeStageCount,
      active_microvm_count: this.activeMicrovms,
      stage_states: stageStates(this.file),
    };
  }

  /** The run as pages of `GET /v1/runs` list it (and as summary.json keeps it). */
  summary(): RunSummary {
    const f = this.file;
    return {
      id: f.id,
      status: f.status,
      file: f.file,
      error: f.error,
      attempt_id: f.attempt_id,
      started_at: f.started_at,
      updated_at: f.updated_at,
      finished_at: f.finished_at,
      terminal_reason: f.terminal_reason,
      terminal_event_id: f.terminal_event_id,
      exit_code: f.exit_code,
      sandbox_mode: f.sandbox_mode ?? null,
      event_count: this.events.length,
    };
  }

  stageViews(): StageView[] {
    return this.stages.map((s) => ({
      name: s.name,
      status: s.status,
      attempt: s.attempt,
      started_at: s.started_at === null ? null : iso(s.started_at),
      finished_at: s.finished_at === null ? null : iso(s.finished_at),
      duration_ms: s.started_at !== null && s.finished_at !== null ? s.finished_at - s.started_at : null,
      exit_code: s.exit_code,
      depends_on: s.depends_on,
      group: s.group,
    }));
  }
}
