/**
 * Run files of the Rust void-box daemon: `runs/<id>.json`, one RunState with its events.
 * Read once at start-up and migrated to our layout (run.json + events.jsonl); this is the
 * only place that knows their shape. Fields they may lack are filled in as we always
 * serve them.
 */
import fs from "node:fs";
import { v2EventName } from "../naming.js";
import type { RunEvent, RunFile } from "../run-model.js";
import type { LoadedRun } from "./runs.js";

/** Reads `file`, a Rust run state that must name run `id`; throws when it is not one. */
export function readLegacyRun(file: string, id: string): LoadedRun {
  const state = JSON.parse(fs.readFileSync(file, "utf8")) as RunFile & { events?: RunEvent[] };
  if (!state || typeof state !== "object" || state.id !== id) throw new Error("not a run state named after its file");
  const { events = [], ...rest } = state;
  if (!Array.isArray(events)) throw new Error("events is not an array");
  events.forEach((e, i) => {
    if (!e || typeof e !== "object" || Array.isArray(e)) throw new Error(`event ${i}: is not an object`);
  });
  return { file: normaliseLegacyFile(rest as RunFile), events: events.map(normaliseLegacyEvent), legacy: true };
}

/** Rust-daemon events may predate seq/event_type_v2/etc.: fill what is derivable. */
function normaliseLegacyEvent(e: RunEvent, i: number): RunEvent {
  const ts = typeof e.ts_ms === "number" ? e.ts_ms : Date.parse(e.timestamp ?? "") || 0;
  return {
    ...e,
    ts_ms: ts,
    level: e.level ?? "info",
    message: e.message ?? "",
    seq: typeof e.seq === "number" ? e.seq : i,
    attempt_id: e.attempt_id ?? 1,
    timestamp: e.timestamp ?? new Date(ts).toISOString(),
    event_type_v2: e.event_type_v2 ?? v2EventName(e.event_type),
    payload: e.payload ?? null,
  };
}

/** The fields of T that it must have but that may be null. */
type RequiredNullable<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? never : null extends T[K] ? K : never }[keyof T];

/**
 * RunFile's required nullable fields, each null. Typed against the generated RunState, so a
 * nullable field added to the contract fails the typecheck until it is listed here.
 */
const UNKNOWN: { [K in RequiredNullable<RunFile>]: null } = {
  report: null,
  error: null,
  finished_at: null,
  terminal_reason: null,
  terminal_event_id: null,
  exit_code: null,
  policy: null,
  artifact_publication: null,
};

/** Rust-daemon run files may lack fields we always serve: absent means unknown (null). */
function normaliseLegacyFile(f: RunFile): RunFile {
  const out = { ...f, attempt_id: f.attempt_id ?? 1, updated_at: f.updated_at ?? f.started_at, file: f.file ?? "" };
  for (const [k, v] of Object.entries(UNKNOWN)) if ((out as Record<string, unknown>)[k] === undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
