// --log-format pretty: pino's JSON lines made readable for a terminal, without a
// dependency: "HH:MM:SS.mmm LEVEL message key=value ...".
const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO ", 40: "WARN ", 50: "ERROR", 60: "FATAL" };
const OMIT = new Set(["level", "time", "msg", "pid", "hostname", "name"]);

function value(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) || v === "" ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

/** Formats one pino JSON line; a line that is not JSON is returned as it is. */
export function prettyLine(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (!rec || typeof rec !== "object") return line;
  const time = typeof rec.time === "number" ? new Date(rec.time).toISOString().slice(11, 23) : "";
  const level = LEVELS[rec.level as number] ?? String(rec.level ?? "");
  const err = rec.err as { message?: string; stack?: string } | undefined;
  const fields = Object.entries(rec)
    .filter(([k, v]) => !OMIT.has(k) && k !== "err" && v !== undefined)
    .map(([k, v]) => `${k}=${value(v)}`);
  const head = [time, level, rec.msg ?? ""].filter((s) => s !== "").join(" ");
  return [head, ...fields].join(" ") + (err?.stack ? `\n${err.stack.replace(/^/gm, "    ")}` : err?.message ? ` err=${value(err.message)}` : "");
}

/** A pino destination writing pretty lines to `out`. */
export function prettyDestination(out: NodeJS.WritableStream): { write(chunk: string): boolean } {
  return {
    write(chunk: string): boolean {
      let text = "";
      for (const line of chunk.split("\n")) if (line) text += prettyLine(line) + "\n";
      return out.write(text);
    },
  };
}
