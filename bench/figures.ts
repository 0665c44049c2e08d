/**
 * What each bench hands to `make bench`'s report: its figures, each with the goal it is
 * held to, written to build/bench/<bench>.json (bench/report.ts reads them all).
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "build", "bench");

export interface Figure {
  /** What was measured, for a person: "daemon start, empty state dir → /v1/health (p50)". */
  figure: string;
  value: number;
  unit: string;
  /** The goal as text ("≤ 500 ms"); absent for figures reported without one. */
  goal?: string;
  pass?: boolean;
  /** The raw measurements behind a latency figure (the report charts their distribution). */
  samples?: number[];
}

export interface BenchFile {
  bench: string;
  figures: Figure[];
}

export function writeFigures(bench: string, figures: Figure[]): void {
  fs.mkdirSync(BENCH_DIR, { recursive: true });
  const file: BenchFile = { bench, figures };
  fs.writeFileSync(path.join(BENCH_DIR, `${bench}.json`), JSON.stringify(file, null, 1) + "\n");
}

/** The p-th percentile (0–100) by nearest rank; NaN for no samples. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** A figure held to "at most `goal`". */
export function atMost(figure: string, value: number, unit: string, goal: number, samples?: number[]): Figure {
  return { figure, value, unit, goal: `≤ ${goal} ${unit}`, pass: value <= goal, ...(samples ? { samples } : {}) };
}

/** A figure held to "at least `goal`". */
export function atLeast(figure: string, value: number, unit: string, goal: number, samples?: number[]): Figure {
  return { figure, value, unit, goal: `≥ ${goal} ${unit}`, pass: value >= goal, ...(samples ? { samples } : {}) };
}
