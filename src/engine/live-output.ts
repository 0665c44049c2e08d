import { isUtf8 } from "node:buffer";
import type { OutputStream } from "../sandbox/types.js";
import type { EngineEvent } from "./types.js";

/** Largest `data` of one `stage.output` event, in bytes. */
export const LIVE_CHUNK_BYTES = 16 * 1024;
/** A stream emits at most one partial chunk per this interval; full chunks go at once. */
export const LIVE_FLUSH_MS = 100;

export interface LiveOutputOptions {
  /** Context fields every event carries. */
  context: { stage_name: string; box_name?: string; group_id?: string };
  attempt: number;
  /** Bytes of each stream that may be streamed (the stage's kept bytes). */
  maxBytes: number;
  /** `stage.output` events this attempt may emit, both streams together. */
  maxEvents: number;
  emit: (e: EngineEvent) => void;
}

/** What was streamed, per stream, for the truncation event. */
export interface LiveStats {
  /** Bytes sent as `stage.output` events. */
  bytes: Record<OutputStream, number>;
  events: number;
  /** The event cap stopped the stream before all kept bytes were sent. */
  capped: boolean;
}

interface StreamState {
  pending: Buffer[];
  pendingBytes: number;
  /** Bytes already emitted (the next event's offset). */
  offset: number;
  /** Bytes taken in (emitted + pending); never more than maxBytes. */
  accepted: number;
  lastFlush: number;
  timer?: NodeJS.Timeout;
}

/**
 * Turns a stage attempt's output, as the sandbox delivers it, into `stage.output`
 * events: in order per stream, coalesced (a partial chunk at most every LIVE_FLUSH_MS,
 * full LIVE_CHUNK_BYTES chunks at once), never past the kept bytes or the event cap.
 * Holds at most one chunk per stream. `finish()` sends the rest and stops its timers;
 * nothing is emitted after it.
 */
export class LiveOutput {
  private readonly streams: Record<OutputStream, StreamState> = { stdout: newState(), stderr: newState() };
  private events = 0;
  private capped = false;
  private finished = false;

  constructor(private readonly o: LiveOutputOptions) {}

  push(stream: OutputStream, data: Buffer): void {
    if (this.finished || this.capped) return;
    const s = this.streams[stream];
    if (!this.take(s, data)) return;
    while (s.pendingBytes >= LIVE_CHUNK_BYTES && !this.capped) this.emitOne(stream, false);
    if (s.pendingBytes === 0 || this.capped || s.timer) return;
    const wait = s.lastFlush + LIVE_FLUSH_MS - performance.now();
    if (wait <= 0) this.emitOne(stream, false);
    else
      s.timer = setTimeout(() => {
        s.timer = undefined;
        if (this.finished || this.capped || s.pendingBytes === 0) return;
        try {
          this.emitOne(stream, false);
        } catch {
          // The event could not be recorded (e.g. a full disk): no more live output; the
          // stage's own end (awaited by the engine) meets the same error and reports it.
          this.capped = true;
        }
      }, wait);
  }

  /**
   * Sends what is pending, and, given the command's kept output, the part of it the
   * sandbox did not deliver live (all of it for an old guest image). Idempotent.
   */
  finish(kept?: Record<OutputStream, Buffer>): LiveStats {
    if (!this.finished) {
      for (const stream of ["stdout", "stderr"] as const) {
        const s = this.streams[stream];
        clearTimeout(s.timer);
        s.timer = undefined;
        const k = kept?.[stream];
        if (k && k.length > s.accepted && !this.capped) this.take(s, k.subarray(s.accepted));
        while (s.pendingBytes > 0 && !this.capped) this.emitOne(stream, true);
        if (kept && s.offset < Math.min(kept[stream].length, this.o.maxBytes)) this.capped = true;
      }
      this.finished = true;
    }
    return { bytes: { stdout: this.streams.stdout.offset, stderr: this.streams.stderr.offset }, events: this.events, capped: this.capped };
  }

  private take(s: StreamState, data: Buffer): boolean {
    const room = this.o.maxBytes - s.accepted;
    if (room <= 0 || data.length === 0) return false;
    // A copy: the caller's buffer may be large or reused.
    const piece = Buffer.from(data.subarray(0, Math.min(room, data.length)));
    s.pending.push(piece);
    s.pendingBytes += piece.length;
    s.accepted += piece.length;
    return true;
  }

  /** Emits up to LIVE_CHUNK_BYTES of the stream, never splitting a UTF-8 character except at the stream's `final` end. */
  private emitOne(stream: OutputStream, final: boolean): void {
    const s = this.streams[stream];
    if (this.events >= this.o.maxEvents) {
      this.capped = true;
      s.pending = [];
      s.pendingBytes = 0;
      return;
    }
    const all = s.pending.length === 1 ? s.pending[0] : Buffer.concat(s.pending);
    let n = Math.min(all.length, LIVE_CHUNK_BYTES);
    // At the end only the stream's very last bytes may end inside a character (cut by the cap).
    if (!final || all.length > n) n = completeUtf8Length(all.subarray(0, n));
    if (n === 0) {
      // Only part of one character so far: wait for the rest (or the end).
      s.pending = [all];
      return;
    }
    const data = all.subarray(0, n);
    const rest = all.subarray(n);
    s.pending = rest.length ? [Buffer.from(rest)] : [];
    s.pendingBytes = rest.length;
    const text = isUtf8(data);
    this.events++;
    s.lastFlush = performance.now();
    this.o.emit({
      type: "stage.output",
      message: `stage ${this.o.context.stage_name} ${stream}: ${n} bytes at offset ${s.offset}`,
      payload: {
        stream,
        offset: s.offset,
        bytes: n,
        encoding: text ? "utf8" : "base64",
        data: data.toString(text ? "utf8" : "base64"),
        stage_attempt: this.o.attempt,
      },
      stream,
      ...this.o.context,
    });
    s.offset += n;
  }
}

function newState(): StreamState {
  return { pending: [], pendingBytes: 0, offset: 0, accepted: 0, lastFlush: -Infinity };
}

/** `b`'s length without a UTF-8 sequence cut off at its end (bytes that are not UTF-8 are kept as they are). */
export function completeUtf8Length(b: Buffer): number {
  for (let i = b.length - 1; i >= Math.max(0, b.length - 4); i--) {
    const c = b[i];
    if ((c & 0xc0) === 0x80) continue; // continuation byte: look for its lead
    const need = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 1;
    return b.length - i < need ? i : b.length;
  }
  return b.length;
}
