/**
 * `make bench`'s last step: one table of every figure the benches wrote to
 * build/bench/*.json (figure, measured, goal, pass/miss), the same as
 * build/bench/report.json, and build/bench/latency.svg charting the latency
 * distributions (the figures that carry samples in ms: boots, warm starts, start-up, pages).
 *
 *   npx tsx bench/report.ts
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BENCH_DIR, percentile, type BenchFile, type Figure } from "./figures.js";

const files: BenchFile[] = fs
  .readdirSync(BENCH_DIR)
  .filter((f) => f.endsWith(".json") && f !== "report.json")
  .sort()
  .map((f) => JSON.parse(fs.readFileSync(path.join(BENCH_DIR, f), "utf8")) as BenchFile);

const rows = files.flatMap((b) => b.figures.map((f) => ({ bench: b.bench, ...f })));
const fmt = (v: number) => (Math.abs(v) >= 100 ? String(Math.round(v)) : String(Number(v.toPrecision(3))));
const verdict = (f: Figure) => (f.pass === undefined ? "" : f.pass ? "pass" : "MISS");

const table = [
  ["bench", "figure", "measured", "goal", ""],
  ...rows.map((r) => [r.bench, r.figure, `${fmt(r.value)} ${r.unit}`, r.goal ?? "—", verdict(r)]),
];
const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
for (const [i, row] of table.entries()) {
  console.log(row.map((c, j) => c.padEnd(widths[j])).join("  ").trimEnd());
  if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
}
const missed = rows.filter((r) => r.pass === false).length;
const held = rows.filter((r) => r.pass !== undefined).length;
console.log(`\n${held - missed} of ${held} goals met; host: ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}`);

fs.writeFileSync(
  path.join(BENCH_DIR, "report.json"),
  JSON.stringify({ generated_at: new Date().toISOString(), host: { cpus: os.cpus().length, load1: os.loadavg()[0], node: process.version }, figures: rows }, null, 1) + "\n",
);

/**
 * One row per distribution: every sample as a dot, p50 and p95 as ticks, on one shared
 * logarithmic ms axis (page latencies of a few ms and boots of a second on one chart).
 */
function svg(dists: Array<{ label: string; samples: number[] }>): string {
  const W = 980, left = 420, right = 30, rowH = 30, top = 30;
  const all = dists.flatMap((d) => d.samples).filter((v) => v > 0);
  const lo = Math.log10(Math.min(...all)) - 0.1, hi = Math.log10(Math.max(...all)) + 0.1;
  const x = (v: number) => left + ((W - left - right) * (Math.log10(Math.max(v, 10 ** lo)) - lo)) / (hi - lo);
  const H = top + rowH * dists.length + 40;
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  out.push(`<text x="${left}" y="18">latency distributions, ms (log scale): dots = samples, blue = p50, red = p95</text>`);
  dists.forEach((d, i) => {
    const y = top + i * rowH + rowH / 2;
    out.push(`<text x="${left - 8}" y="${y + 4}" text-anchor="end">${esc(d.label)}</text>`, `<line x1="${left}" x2="${W - right}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    for (const s of d.samples) out.push(`<circle cx="${x(s).toFixed(1)}" cy="${y}" r="2.5" fill="#555" fill-opacity="0.5"/>`);
    for (const [p, color] of [[50, "#1f6fd1"], [95, "#d13b1f"]] as const) {
      const v = x(percentile(d.samples, p)).toFixed(1);
      out.push(`<line x1="${v}" x2="${v}" y1="${y - 9}" y2="${y + 9}" stroke="${color}" stroke-width="2"/>`);
    }
  });
  const axisY = top + rowH * dists.length + 10;
  out.push(`<line x1="${left}" x2="${W - right}" y1="${axisY}" y2="${axisY}" stroke="#000"/>`);
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    const v = 10 ** e;
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${axisY}" y2="${axisY + 5}" stroke="#000"/>`, `<text x="${x(v)}" y="${axisY + 18}" text-anchor="middle">${v}</text>`);
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}

const dists = rows.filter((r) => r.samples?.length && r.unit === "ms").map((r) => ({ label: r.figure, samples: r.samples! }));
if (dists.length) {
  fs.writeFileSync(path.join(BENCH_DIR, "latency.svg"), svg(dists));
  console.log(`wrote ${path.join("build/bench", "report.json")} and ${path.join("build/bench", "latency.svg")}`);
} else console.log(`wrote ${path.join("build/bench", "report.json")} (no latency samples to chart)`);
