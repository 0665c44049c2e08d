/**
 * Host <-> guest protocol of the QEMU sandbox.
 *
 * Transport: a dedicated virtio-serial port named "voidbox.0" (`-device
 * virtio-serial-device -device virtserialport,name=voidbox.0`) whose QEMU chardev is a
 * Unix socket the host listens on. The guest console (ttyS0) only carries kernel
 * messages, which the host keeps for diagnostics and never parses.
 *
 * Framing: every message, in both directions, is one frame:
 *
 *     "VBX1 <TYPE> <ID> <ARG> <LEN> <CRC>\n" <LEN raw payload bytes>
 *
 *   TYPE  upper-case word (below); ID  request id (decimal, 0 for unsolicited frames);
 *   ARG   one signed decimal integer whose meaning depends on TYPE;
 *   LEN   payload length in bytes (decimal, at most MAX_FRAME_PAYLOAD = 16 MiB);
 *   CRC   CRC-32 (zlib/IEEE, as busybox `crc32` prints it) of the payload, 8 hex digits.
 *
 * The header is ASCII and short (MAX_HEADER_BYTES); the payload is binary. A header that
 * does not parse, a length over the limit or a checksum mismatch is a protocol error:
 * the stream cannot be resynchronised, so the operation in flight fails with a
 * SandboxError and the VM is considered broken. The channel is a dedicated port: the
 * decoder is strict (nothing but frames).
 *
 * Host -> guest
 *   STDIN    ID  payload = stdin bytes for the EXEC with the same ID (always sent first)
 *   EXEC     ID  ARG = bytes of stdout and of stderr to send back (0: all); payload =
 *                a POSIX sh script (see buildExecScript) run in /workspace in its own
 *                process group, stdin/stdout/stderr redirected to files
 *   KILL     ID  SIGKILL the running program's process group (no reply; EXEC then
 *                completes with exit code 137)
 *   READ     ID  ARG = max bytes, payload = path relative to /workspace
 *   SEED     0   ARG = the host's clock (ms since the epoch), payload = random bytes from
 *                the host: the guest credits them to its random pool, reseeds its
 *                generator at once and sets its clock; answered by READY. Sent to every
 *                fresh VM before use; what makes a VM restored from a snapshot its own
 *                (snapshots.ts). Guests that predate it answer ERROR (boot only).
 *   POWEROFF 0   sync and power off (no reply; QEMU exits)
 * Guest -> host
 *   READY    0   payload = guest kernel version (`uname -r`), sent once after boot and
 *                as the answer to SEED
 *   OUTC, ERRC ID  while the program runs: ARG = offset of the payload in its stdout /
 *                stderr; payload = the next bytes it wrote (the guest polls its output
 *                every 10-100 ms: at most 256 KiB a frame, never past the EXEC's ARG in
 *                all). Chunks of one stream arrive in order and contiguous; all of them
 *                come before OUT/ERR. The host ignores a chunk that does not continue its
 *                stream and takes whatever was not streamed from OUT/ERR at the end: so
 *                images that predate live output (no chunks) still work, and hosts that
 *                predate it ignore the chunks (they only read OUT/ERR).
 *   OUT, ERR ID  ARG = the stream's full size in bytes; payload = its first bytes, at
 *                most the EXEC's ARG (sent before EXIT). Bounding output in the guest keeps
 *                a flood off the host: it never crosses the channel, and no frame can
 *                outgrow MAX_FRAME_PAYLOAD. (Guest images before the cap send ARG 0 and
 *                everything; the host then truncates.)
 *   EXIT     ID  ARG = exit code (127 when the program was not found); always the last
 *                frame of an EXEC
 *   FILE     ID  payload = file content;  NOFILE ID  the file does not exist
 *   TOOBIG   ID  ARG = actual size (larger than the READ's max bytes)
 *   ERROR    ID  payload = UTF-8 message (bad request, guest-side checksum failure, ...)
 */
import { crc32 } from "node:zlib";

const MAGIC = "VBX1";
/** Largest payload accepted in either direction. */
export const MAX_FRAME_PAYLOAD = 16 * 1024 * 1024;
/** Longest header line (including the newline) before the decoder gives up. */
const MAX_HEADER_BYTES = 128;


export interface Frame {
  type: string;
  id: number;
  arg: number;
  payload: Buffer;
}

/** A frame the decoder refused; the stream is unusable afterwards. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

export function checksum(payload: Buffer): string {
  return (crc32(payload) >>> 0).toString(16).padStart(8, "0");
}

export function encodeFrame(type: string, id: number, arg: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (!/^[A-Z]{1,12}$/.test(type)) throw new ProtocolError(`invalid frame type ${JSON.stringify(type)}`);
  if (!Number.isSafeInteger(id) || id < 0) throw new ProtocolError(`invalid frame id ${id}`);
  if (!Number.isSafeInteger(arg)) throw new ProtocolError(`invalid frame arg ${arg}`);
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new ProtocolError(`frame payload of ${payload.length} bytes exceeds the ${MAX_FRAME_PAYLOAD}-byte limit`);
  }
  const header = Buffer.from(`${MAGIC} ${type} ${id} ${arg} ${payload.length} ${checksum(payload)}\n`, "ascii");
  return Buffer.concat([header, payload]);
}

const HEADER_RE = /^VBX1 ([A-Z]{1,12}) (\d{1,15}) (-?\d{1,15}) (\d{1,10}) ([0-9a-f]{8})$/;
const MAGIC_BUF = Buffer.from(`${MAGIC} `, "ascii");

export interface DecoderOptions {
  maxPayload?: number;
}

/**
 * Incremental frame decoder. `push()` returns the frames completed by the chunk and
 * throws ProtocolError on malformed input; after an error every later push throws too.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  /** Chunks of a pending payload not yet joined into `buf` (joined once, when complete). */
  private parts: Buffer[] = [];
  private partsBytes = 0;
  private pending: { type: string; id: number; arg: number; len: number; crc: string } | null = null;
  private failed: ProtocolError | null = null;
  private readonly maxPayload: number;

  constructor(opts: DecoderOptions = {}) {
    this.maxPayload = opts.maxPayload ?? MAX_FRAME_PAYLOAD;
  }

  /** Bytes buffered but not yet part of a complete frame. */
  get bufferedBytes(): number {
    return this.buf.length + this.partsBytes;
  }

  push(chunk: Buffer): Frame[] {
    if (this.failed) throw this.failed;
    // While a payload is incomplete, chunks are only collected: joining each one into the
    // buffer would copy a large payload once per chunk (quadratic in its size).
    if (this.pending && this.buf.length + this.partsBytes + chunk.length < this.pending.len) {
      this.parts.push(chunk);
      this.partsBytes += chunk.length;
      return [];
    }
    const pieces = this.buf.length ? [this.buf, ...this.parts, chunk] : [...this.parts, chunk];
    this.parts = [];
    this.partsBytes = 0;
    this.buf = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
    const out: Frame[] = [];
    try {
      for (;;) {
        const f = this.next();
        if (!f) break;
        out.push(f);
      }
    } catch (e) {
      this.failed = e instanceof ProtocolError ? e : new ProtocolError(String(e));
      this.buf = Buffer.alloc(0);
      this.parts = [];
      this.partsBytes = 0;
      throw this.failed;
    }
    return out;
  }

  private next(): Frame | null {
    if (!this.pending) {
      if (this.buf.length === 0) return null;
      const n = Math.min(this.buf.length, MAGIC_BUF.length);
      if (!this.buf.subarray(0, n).equals(MAGIC_BUF.subarray(0, n))) {
        throw new ProtocolError(`malformed frame: expected "${MAGIC}" header, got ${preview(this.buf)}`);
      }
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) {
        if (this.buf.length >= MAX_HEADER_BYTES) {
          throw new ProtocolError(`malformed frame: header longer than ${MAX_HEADER_BYTES} bytes: ${preview(this.buf)}`);
        }
        return null;
      }
      if (nl + 1 > MAX_HEADER_BYTES) {
        throw new ProtocolError(`malformed frame: header longer than ${MAX_HEADER_BYTES} bytes: ${preview(this.buf)}`);
      }
      const line = this.buf.subarray(0, nl).toString("latin1");
      const m = HEADER_RE.exec(line);
      if (!m) throw new ProtocolError(`malformed frame header ${JSON.stringify(line)}`);
      const len = Number(m[4]);
      if (len > this.maxPayload) {
        throw new ProtocolError(`oversized frame: ${m[1]} payload of ${len} bytes exceeds the ${this.maxPayload}-byte limit`);
      }
      this.pending = { type: m[1], id: Number(m[2]), arg: Number(m[3]), len, crc: m[5] };
      this.buf = this.buf.subarray(nl + 1);
    }
    const p = this.pending;
    if (this.buf.length < p.len) return null;
    const payload = Buffer.from(this.buf.subarray(0, p.len));
    this.buf = this.buf.subarray(p.len);
    this.pending = null;
    const got = checksum(payload);
    if (got !== p.crc) {
      throw new ProtocolError(`checksum mismatch on ${p.type} frame (id ${p.id}, ${p.len} bytes): header says ${p.crc}, payload is ${got}`);
    }
    return { type: p.type, id: p.id, arg: p.arg, payload };
  }

  /** Called at end of stream: a partially received frame is an error. */
  end(): void {
    if (this.failed) return;
    if (this.pending) {
      throw new ProtocolError(`truncated frame: ${this.pending.type} expected ${this.pending.len} payload bytes, got ${this.buf.length + this.partsBytes}`);
    }
    if (this.buf.length > 0) {
      throw new ProtocolError(`truncated frame header: ${preview(this.buf)}`);
    }
  }
}

function preview(b: Buffer): string {
  const s = b.subarray(0, 40).toString("latin1").replace(/[^\x20-\x7e]/g, ".");
  return JSON.stringify(s) + (b.length > 40 ? "..." : "");
}

// --- message helpers -----------------------------------------------------------------

/** Quote a string for POSIX sh (single quotes; embedded ' becomes '\''). */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const GUEST_DEFAULT_ENV: Record<string, string> = {
  PATH: "/bin:/sbin:/usr/bin:/usr/sbin",
  HOME: "/root",
};

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The sh script the guest runs for EXEC: a clean environment (defaults + `env`), cwd
 * /workspace, `program` looked up on PATH. busybox env exits 127 with
 * "can't execute '<program>': No such file or directory" when it is missing.
 * Throws ProtocolError for values that cannot be passed to exec (NUL bytes, bad names).
 */
export function buildExecScript(program: string, args: string[], env: Record<string, string>): string {
  if (program.length === 0) throw new ProtocolError("empty program name");
  const all = { ...GUEST_DEFAULT_ENV, ...env };
  const parts: string[] = [];
  for (const [k, v] of Object.entries(all)) {
    if (!ENV_NAME_RE.test(k)) throw new ProtocolError(`invalid environment variable name ${JSON.stringify(k)}`);
    if (v.includes("\0")) throw new ProtocolError(`environment variable ${k} contains a NUL byte`);
    parts.push(shQuote(`${k}=${v}`));
  }
  for (const a of [program, ...args]) {
    if (a.includes("\0")) throw new ProtocolError("program or argument contains a NUL byte");
  }
  // A program name containing "=" would be read by env as an assignment.
  if (program.includes("=")) throw new ProtocolError(`invalid program name ${JSON.stringify(program)}`);
  return [
    "cd /workspace || exit 126",
    `exec env -i ${parts.join(" ")} ${[program, ...args].map(shQuote).join(" ")}`,
    "",
  ].join("\n");
}

/** Returns an error message when `rel` is not a safe path relative to /workspace. */
export function checkRelPath(rel: string): string | null {
  if (rel.length === 0) return "empty path";
  if (rel.length > 4096) return "path too long";
  if (rel.startsWith("/")) return `absolute path not allowed: ${rel}`;
  if (/[\0\n\r]/.test(rel)) return "path contains a control character";
  if (rel.split("/").some((seg) => seg === "..")) return `path must not contain "..": ${rel}`;
  return null;
}
