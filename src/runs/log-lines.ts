import type { Run } from "./run.js";

/**
 * The report's output as `log.chunk` events (one per line, then `log.closed`), at most
 * `maxLines` of them; past it one `log.truncated` event says how many lines were dropped.
 */
export function appendOutputLines(run: Run, output: string, maxLines: number): void {
  const text = output.endsWith("\n") ? output.slice(0, -1) : output;
  // Each pass starts at the beginning of a line that exists.
  for (let at = 0, kept = 0; ; kept++) {
    if (kept === maxLines) {
      let dropped = 1;
      // A plain scan: up to max-stage-output bytes of one-character lines, so no call per line.
      for (let i = at; i < text.length; i++) if (text.charCodeAt(i) === 10) dropped++;
      run.append({
        type: "log.truncated",
        level: "warn",
        message: `output truncated: ${dropped} more line(s) not sent as log.chunk (limit ${maxLines})`,
        stream: "stdout",
        payload: { kept_lines: kept, dropped_lines: dropped, total_lines: kept + dropped, limit_lines: maxLines },
      });
      break;
    }
    const nl = text.indexOf("\n", at);
    const line = nl < 0 ? text.slice(at) : text.slice(at, nl);
    run.append({ type: "log.chunk", message: line, stream: "stdout", payload: { data: line } });
    if (nl < 0) break;
    at = nl + 1;
  }
  run.append({ type: "log.closed", message: "output closed", stream: "stdout" });
}
