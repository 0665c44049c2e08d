import type { RunEvent, RunFile, RunStatus } from "../run-model.js";

const TERMINAL_EVENTS: Record<string, RunStatus> = { "run.finished": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled" };

/** The last terminal event (run.finished/failed/cancelled) of a run's log, if any. */
export function terminalEventOf(events: RunEvent[]): RunEvent | undefined {
  for (let i = events.length - 1; i >= 0; i--) if (TERMINAL_EVENTS[events[i].event_type] !== undefined) return events[i];
  return undefined;
}

/**
 * The terminal event is appended (and fsynced) before run.json is rewritten, so a crash
 * between the two leaves a log that already says how the run ended while run.json still
 * says it is active. On restore the logged outcome is adopted, as far as the event
 * tells it (the report, for one, is not in it): the run is not failed a second time.
 */
export function adoptTerminalEvent(file: RunFile, e: RunEvent): void {
  const status = TERMINAL_EVENTS[e.event_type];
  const p = (e.payload ?? {}) as { error?: unknown; exit_code?: unknown; reason?: unknown };
  file.status = status;
  file.finished_at = e.timestamp;
  file.updated_at = e.timestamp;
  file.terminal_event_id = e.event_id;
  if (typeof p.exit_code === "number") file.exit_code = p.exit_code;
  if (status === "failed") {
    file.error = typeof p.error === "string" ? p.error : e.message;
    file.terminal_reason = typeof p.reason === "string" ? p.reason : file.error;
  } else if (status === "cancelled") {
    file.terminal_reason = typeof p.reason === "string" ? p.reason : e.message;
  }
}
