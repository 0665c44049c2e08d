import type { RunState, VoidboxEvent } from "@voidbox/client";

/** One event as a line: time, seq, type, stage, message, and the payload's key numbers. */
export function formatEvent(e: VoidboxEvent): string {
  const where = e.stage_name ? ` [${e.stage_name}]` : "";
  let extra = "";
  switch (e.event_type) {
    case "microvm.spawned":
    case "MicroVmSpawned":
      extra = ` [pid ${e.payload.pid}]`;
      break;
    case "stage.completed":
    case "StageSucceeded":
    case "stage.failed":
    case "StageFailed":
      extra = ` (${e.payload.duration_ms} ms, exit ${e.payload.exit_code})`;
      break;
  }
  return `${e.timestamp}  #${String(e.seq).padStart(3)}  ${e.event_type.padEnd(18)}${where} ${e.message}${extra}`;
}

function duration(r: RunState): string {
  if (!r.finished_at) return "-";
  const ms = Date.parse(r.finished_at) - Date.parse(r.started_at);
  return ms < 1000 ? `${ms} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** Runs as an aligned text table. */
export function runTable(runs: RunState[]): string {
  const rows = [["RUN ID", "STATUS", "NAME", "KIND", "STARTED", "DURATION", "FILE"]];
  for (const r of runs) rows.push([r.id, r.status, r.report?.name ?? "-", r.report?.kind ?? "-", r.started_at, duration(r), r.file]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd()).join("\n") + "\n";
}
