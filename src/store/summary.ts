import fs from "node:fs";
import path from "node:path";
import type { components } from "../../generated/api.js";
import { writeFileAtomic } from "./fsutil.js";
import { TERMINAL } from "../run-model.js";

export type RunSummary = components["schemas"]["RunSummary"];

/**
 * A file's size and mtime when the summary was written: a summary whose files no longer
 * match (an older daemon appended, someone edited or restored them) is stale.
 */
interface Stamp {
  size: number;
  mtime_ms: number;
}

const SUMMARY = "summary.json";

function stamp(file: string): Stamp {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  return st ? { size: st.size, mtime_ms: st.mtimeMs } : { size: -1, mtime_ms: 0 };
}

const same = (a: unknown, b: Stamp) => !!a && typeof a === "object" && (a as Stamp).size === b.size && (a as Stamp).mtime_ms === b.mtime_ms;

/**
 * `<run dir>/summary.json`: the run's summary plus the stamps of run.json and
 * events.jsonl it was derived from, written after a terminal run.json. Start-up lists a
 * terminal run from it without reading its events. Replaced atomically (rename) but not
 * fsynced: it is derived, and one that a crash left empty, torn or behind its files is
 * never trusted (it does not parse, or its stamps do not match) but derived again.
 */
export function writeSummary(dir: string, summary: RunSummary): void {
  const body = { summary, run_json: stamp(path.join(dir, "run.json")), events: stamp(path.join(dir, "events.jsonl")) };
  writeFileAtomic(path.join(dir, SUMMARY), JSON.stringify(body), { durable: false });
}

/** The summary when summary.json exists, parses and matches both files as they are now; else null (derive it again). */
export function readFreshSummary(dir: string): unknown {
  let body: { summary?: unknown; run_json?: unknown; events?: unknown };
  try {
    body = JSON.parse(fs.readFileSync(path.join(dir, SUMMARY), "utf8")) as typeof body;
  } catch {
    return null; // absent, unreadable or torn: rebuilt from the run's files
  }
  if (!body || typeof body !== "object") return null;
  if (!same(body.run_json, stamp(path.join(dir, "run.json"))) || !same(body.events, stamp(path.join(dir, "events.jsonl")))) return null;
  return body.summary ?? null;
}

const str = (v: unknown) => typeof v === "string";
const strOrNull = (v: unknown) => v === null || typeof v === "string";
const int = (v: unknown) => Number.isInteger(v);

/** One check per RunSummary field: typed by the generated RunSummary, so a field added to it needs its check. */
const SUMMARY_FIELDS: { [K in keyof RunSummary]-?: (v: unknown) => boolean } = {
  id: str,
  status: (v) => TERMINAL.has(v as RunSummary["status"]),
  file: str,
  error: strOrNull,
  attempt_id: int,
  started_at: str,
  updated_at: str,
  finished_at: strOrNull,
  terminal_reason: strOrNull,
  terminal_event_id: strOrNull,
  exit_code: (v) => v === null || int(v),
  sandbox_mode: (v) => v === null || v === "mock" || v === "local",
  event_count: (v) => int(v) && (v as number) >= 0,
};
const SUMMARY_CHECKS = Object.entries(SUMMARY_FIELDS);

/**
 * A summary.json's summary when it is a terminal run's and has RunSummary's shape;
 * null: read the run's files instead. Checked by hand, not by the schema: compiling
 * ajv and checking 10,000 summaries was a third of a long history's start-up.
 */
export function storedSummary(s: unknown): RunSummary | null {
  if (!s || typeof s !== "object") return null;
  const r = s as Record<string, unknown>;
  for (const [k, ok] of SUMMARY_CHECKS) if (!ok(r[k])) return null;
  return s as RunSummary;
}
