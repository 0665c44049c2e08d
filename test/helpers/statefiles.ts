// On-disk run state written by hand (the states a crash or an operator can leave) and
// read back raw, for the model, crash, fault and bench suites: the one run.json builder.
// Shapes follow openapi.yaml's RunEvent and the daemon's run.json (RunFile: RunState
// without events and live counters).
import fs from "node:fs";
import path from "node:path";
import type { RunFile } from "../../src/run-model.js";
import { TERMINAL } from "./runs.js";
import type { RunEvent } from "./types.js";

/** When the runs these files describe started (their first event's time). */
export const T0 = Date.parse("2026-11-27T10:00:00.000Z");

/** One event line as the daemon writes it (legacy name in both fields unless given). */
export function eventLine(runId: string, seq: number, type: string, payload: Record<string, unknown> | null = null, v2 = type): string {
  return JSON.stringify({
    ts_ms: T0 + seq,
    level: type === "run.failed" ? "error" : "info",
    event_type: type,
    message: type,
    run_id: runId,
    event_id: eventId(seq),
    seq,
    attempt_id: 1,
    timestamp: new Date(T0 + seq).toISOString(),
    event_type_v2: v2,
    payload,
  });
}

/** The event_id eventLine gives an event with this seq. */
export function eventId(seq: number): string {
  return `0190c5d2-7c1e-7000-8000-${String(seq).padStart(12, "0")}`;
}

/**
 * A run.json of a run started at T0, running unless `over` says otherwise; terminal fields
 * unset (but for finished_at = T0 in a terminal status) unless `over` sets them.
 */
export function runFile(id: string, over: Partial<RunFile> = {}): RunFile {
  const status = over.status ?? "running";
  return {
    id,
    status,
    file: "/nonexistent.yaml",
    report: null,
    error: null,
    attempt_id: 1,
    started_at: new Date(T0).toISOString(),
    updated_at: new Date(T0).toISOString(),
    finished_at: TERMINAL.has(status) ? new Date(T0).toISOString() : null,
    terminal_reason: null,
    terminal_event_id: null,
    exit_code: null,
    policy: null,
    sandbox_mode: null,
    stages: [],
    artifact_publication: null,
    ...over,
  };
}

/** Writes runs/<id>/run.json (any object: malformed ones on purpose too) and events.jsonl (lines as given, each newline-terminated). */
export function writeRun(stateDir: string, id: string, file: object, lines: string[]): string {
  const dir = path.join(stateDir, "runs", id);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(file));
  fs.writeFileSync(path.join(dir, "events.jsonl"), lines.map((l) => l + "\n").join(""));
  return dir;
}

/** A JSON-lines file read raw: its parsed lines, the numbers of lines that are not JSON, whether it ends torn. */
export function readEventsFile(file: string): { events: RunEvent[]; badLines: number[]; torn: boolean } {
  let text = "";
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return { events: [], badLines: [], torn: false };
  }
  const torn = text.length > 0 && !text.endsWith("\n");
  const events: RunEvent[] = [];
  const badLines: number[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line) return;
    try {
      events.push(JSON.parse(line) as RunEvent);
    } catch {
      badLines.push(i + 1);
    }
  });
  return { events, badLines, torn };
}
