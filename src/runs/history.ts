import type { Logger } from "pino";
import type { components } from "../../generated/api.js";
import { ApiError, notFound } from "../errors.js";
import { encodedJson, type JsonBytes } from "../json-bytes.js";
import { normaliseStatus } from "../naming.js";
import { TERMINAL, type RunState } from "../run-model.js";
import type { LoadedRun } from "../store/runs.js";
import type { StateSchemas } from "../store/schemas.js";
import { storedSummary, type RunSummary } from "../store/summary.js";
import { RunCache } from "./run-cache.js";
import { decodeCursor, encodeCursor, RunOrder, type OrderKey } from "./run-order.js";
import { Run, type RunDeps } from "./run.js";
import { stateJson } from "./state-json.js";

type RunPage = components["schemas"]["RunPage"];
type RunList = components["schemas"]["RunList"];
export type RunFilter = "active" | "terminal" | undefined;

export interface RunHistoryDeps extends RunDeps {
  log: Logger;
  /** Bytes of read-back terminal runs kept in memory. */
  runCacheBytes: number;
  /** Shape checks for run files read back (absent: not checked). */
  schemas?: StateSchemas;
  /** Told of a terminal run's files quarantined after start-up (found damaged when first read back). */
  onQuarantine?: (file: string, reason: string) => void;
}

/**
 * Every run the daemon knows, in list order: a Run while it is active (or its terminal
 * state is not on disk yet), else its summary; a terminal run's events are read back from
 * disk when asked for (the recently read ones are kept in `cache`), with the checks
 * start-up applies. Listing and paging read from here.
 */
export class RunHistory {
  private readonly runs = new Map<string, Run | RunSummary>();
  private readonly order = new RunOrder();
  private readonly cache: RunCache;

  constructor(private readonly deps: RunHistoryDeps) {
    this.cache = new RunCache(deps.runCacheBytes);
  }

  /**
   * Loads the runs found on disk, each checked against its schema (what does not conform
   * is quarantined: the paths are returned). Terminal runs with an up-to-date summary stay
   * summaries; the others are returned as Runs for the service to settle, then retire.
   */
  load(): { runs: Array<{ run: Run; legacy: boolean }>; quarantined: string[] } {
    const { runs, stored, quarantined, reasons, interrupted } = this.deps.store.loadAll((l) => this.conforming(l), storedSummary);
    for (const id of interrupted) this.deps.log.warn({ run_id: id }, "removed a run directory left by a create interrupted before its first write");
    for (const s of stored) this.runs.set(s.id, s);
    this.order.load([...stored, ...runs.map((l) => l.file)].map((r) => ({ started_at: r.started_at, id: r.id })));
    quarantined.forEach((q, i) => this.deps.log.error({ file: q, reason: reasons[i] }, "state file does not conform; quarantined"));
    const loaded = runs.map((l) => {
      const run = new Run(l.file, l.events, this.deps, l.lines);
      this.runs.set(run.id, run);
      return { run, legacy: l.legacy };
    });
    return { runs: loaded, quarantined };
  }

  /** A new run, just made durable. */
  add(run: Run): void {
    this.runs.set(run.id, run);
    this.order.add({ started_at: run.file.started_at, id: run.id });
  }

  /** The run or its summary, without reading anything back; undefined when unknown. */
  entry(id: string): Run | RunSummary | undefined {
    return this.runs.get(id);
  }

  /** The run, its events read back if it is retired; NOT_FOUND when unknown or damaged. */
  get(id: string): Run {
    const entry = this.runs.get(id);
    if (!entry) throw notFound(`run ${id}`);
    if (entry instanceof Run) return entry;
    return this.cache.get(id) ?? this.readBack(entry, true);
  }

  /** The runs held in memory as Runs (active ones, and terminal ones not retired yet). */
  *loaded(): IterableIterator<Run> {
    for (const r of this.runs.values()) if (r instanceof Run) yield r;
  }

  /** Terminal runs read back and kept for the next read. */
  get cachedCount(): number {
    return this.cache.size;
  }

  /**
   * A terminal run whose state is on disk leaves memory except for its summary; its
   * events are read back when asked for (`keep`: kept in the cache until then).
   */
  retire(run: Run, keep: boolean): void {
    if (!run.terminal || this.runs.get(run.id) !== run) return;
    this.runs.set(run.id, run.summary());
    if (keep) this.cache.put(run);
  }

  /**
   * Summaries for terminal runs that had none (a state dir from before them), written a
   * batch per event-loop turn after start-up so they do not delay it; best effort (the
   * next start derives what is missing again).
   */
  writeSummariesLater(pending: RunSummary[]): void {
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
   * Every run matching `filter`, oldest first, with its events: terminal runs are read
   * back one by one (not kept: a full listing would only churn the cache).
   */
  list(filter: RunFilter): Run[] {
    const out: Run[] = [];
    for (const { id } of this.order.slice()) {
      const entry = this.runs.get(id);
      if (!entry || !matches(entry, filter)) continue;
      if (entry instanceof Run) out.push(entry);
      else {
        const run = this.cache.get(id) ?? this.tryReadBack(entry);
        if (run) out.push(run); // else quarantined (or gone) just now: not listed, like a run quarantined at start-up
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
  listJson(filter: RunFilter, v2: boolean): JsonBytes<RunList> {
    const parts: Buffer[] = [Buffer.from('{"runs":[')];
    for (const { id } of this.order.slice()) {
      const entry = this.runs.get(id);
      if (!entry || !matches(entry, filter)) continue;
      const live = entry instanceof Run ? entry : this.cache.get(id);
      const json =
        live || v2
          ? JSON.stringify((live ?? this.tryReadBack(entry as RunSummary))?.toState(v2) ?? null)
          : (orGone(() => stateJson(this.readChecked(entry as RunSummary, false))) ?? "null");
      if (json === "null") continue; // quarantined (or gone) just now: not listed, like a run quarantined at start-up
      parts.push(Buffer.from(parts.length > 1 ? "," + json : json));
    }
    parts.push(Buffer.from("]}"));
    return encodedJson(Buffer.concat(parts));
  }

  /** At most `limit` runs after `cursor` (a previous page's next_cursor), as summaries: no file is read. */
  page(filter: RunFilter, limit: number, cursor: string | undefined): RunPage {
    const runs: RunSummary[] = [];
    let last: OrderKey | undefined;
    for (let i = this.order.after(cursor === undefined ? null : decodeCursor(cursor)); i < this.order.length; i++) {
      const key = this.order.at(i)!;
      const entry = this.runs.get(key.id);
      if (!entry || !matches(entry, filter)) continue;
      if (runs.length === limit) return { runs, next_cursor: encodeCursor(last!) };
      runs.push(entry instanceof Run ? entry.summary() : entry);
      last = key;
    }
    return { runs, next_cursor: null };
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

  private tryReadBack(summary: RunSummary): Run | null {
    return orGone(() => this.readBack(summary, false));
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
    return loaded;
  }
}

/** What `read` returns, or null when the run turned out damaged (quarantined) or gone: NOT_FOUND. */
function orGone<T>(read: () => T): T | null {
  try {
    return read();
  } catch (e) {
    if (e instanceof ApiError && e.code === "NOT_FOUND") return null;
    throw e;
  }
}

const matches = (entry: Run | RunSummary, filter: RunFilter) => !filter || TERMINAL.has(entry.status) === (filter === "terminal");
