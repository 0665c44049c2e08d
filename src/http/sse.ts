import type { IncomingMessage, ServerResponse } from "node:http";
import type { Run } from "../runs/run.js";

/** Events are written in batches of about this many bytes (one write call each). */
const BATCH_BYTES = 64 * 1024;

export interface EventStreamOptions {
  /** A comment line is written this often, so clients and proxies see the stream is alive. */
  heartbeatMs: number;
  /** A client that has not taken what was written for this long is cut off; it can resume with Last-Event-ID. */
  stallTimeoutMs: number;
}

/** q of each media range of an Accept header, by lower-case type. */
function acceptQ(accept: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const range of accept.split(",")) {
    const [type, ...params] = range.split(";").map((s) => s.trim().toLowerCase());
    if (!type) continue;
    const q = params.find((p) => p.startsWith("q="));
    const v = q ? Number(q.slice(2)) : 1;
    out.set(type, Number.isFinite(v) ? v : 0);
  }
  return out;
}

/**
 * Whether the client asked for server-sent events: `text/event-stream` in Accept (with
 * q > 0, and not ranked below an explicit application/json). Anything else, including
 * no Accept and `*\/*`, gets the JSON reply, as before.
 */
export function wantsEventStream(accept: string | string[] | undefined): boolean {
  if (accept === undefined) return false;
  const q = acceptQ(Array.isArray(accept) ? accept.join(",") : accept);
  const sse = q.get("text/event-stream") ?? 0;
  return sse > 0 && sse >= (q.get("application/json") ?? 0);
}

/** An id or a type is one line of the frame: a stored value must not break the framing. */
const oneLine = (s: string) => s.replace(/[\r\n]/g, "");

function frame(run: Run, i: number, v2: boolean): string {
  const e = run.events[i];
  return `id: ${oneLine(e.event_id)}\nevent: ${oneLine(v2 ? e.event_type_v2 : e.event_type)}\ndata: ${run.eventJson(i, v2)}\n\n`;
}

/**
 * Streams a run's events from index `start` as server-sent events: what exists now,
 * then each event as it is appended, and closes once the run is terminal and every
 * event appended so far has been sent. The terminal event and what follows it
 * (`log.chunk`… `log.closed`) are appended in one turn of the event loop, and the
 * stream sends on a microtask after an append, so it never closes between them.
 *
 * The stream keeps only its index into the run's events: a client that does not read
 * gets no more writes until the socket drains, so nothing piles up in memory; one that
 * stays stalled for `stallTimeoutMs` loses the connection (and may resume).
 */
export function eventStream(run: Run, start: number, v2: boolean, opts: EventStreamOptions) {
  return (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no", // reverse proxies: do not hold events back
      connection: "close", // the connection slot is freed when the stream ends
    });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    let next = start;
    let blocked = false; // a write returned false: wait for 'drain'
    let scheduled = false;
    let done = false;
    let stall: NodeJS.Timeout | undefined;
    const block = () => {
      blocked = true;
      stall ??= setTimeout(() => res.destroy(), opts.stallTimeoutMs);
    };

    const flush = () => {
      scheduled = false;
      if (done || blocked) return;
      while (next < run.events.length) {
        let chunk = "";
        while (next < run.events.length && chunk.length < BATCH_BYTES) chunk += frame(run, next++, v2);
        if (!res.write(chunk)) return block();
      }
      if (run.terminal) {
        stop();
        res.end();
      }
    };
    const schedule = () => {
      if (scheduled || done) return;
      scheduled = true;
      queueMicrotask(flush);
    };
    const onDrain = () => {
      blocked = false;
      clearTimeout(stall);
      stall = undefined;
      flush();
    };
    const beat = setInterval(() => {
      if (!blocked && !done && !res.write(": heartbeat\n\n")) block();
    }, opts.heartbeatMs);
    const unsubscribe = run.subscribe(schedule);
    const stop = () => {
      if (done) return;
      done = true;
      unsubscribe();
      clearInterval(beat);
      clearTimeout(stall);
      res.off("drain", onDrain);
    };
    res.on("drain", onDrain);
    res.on("close", stop); // the client went away (or the stream ended)
    flush();
  };
}
