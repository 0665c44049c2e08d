// The reply counts of one test file, kept apart from the gate itself so that the vitest
// setup file can flush them without loading openapi.yaml into every test process.
import { appendFileSync } from "node:fs";
import path from "node:path";

export interface Tally {
  checked: number;
  /** Replies a test opted out of (deliberately malformed requests to Prism's mock, its own RFC 7807 errors). */
  unchecked: number;
  violations: number;
  /** "operationId status" → replies checked. */
  pairs: Record<string, number>;
  /** The latest few violations, described. */
  examples: string[];
}

export const tally: Tally = { checked: 0, unchecked: 0, violations: 0, pairs: {}, examples: [] };

/** Appends this file's tally to the run's tally file (see conformance-global.ts) and resets it. */
export function flushTally(dir: string, file: string): void {
  if (tally.checked === 0 && tally.unchecked === 0) return;
  appendFileSync(path.join(dir, "tally.jsonl"), JSON.stringify({ file, ...tally }) + "\n");
  Object.assign(tally, { checked: 0, unchecked: 0, violations: 0, pairs: {}, examples: [] });
}
