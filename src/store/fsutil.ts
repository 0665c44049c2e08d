import fs from "node:fs";
import path from "node:path";
import { ShortWriteError } from "./storage.js";

/**
 * Durable file primitives. Writes are synchronous on purpose: a run's state changes
 * happen inside one event-loop turn, so no two writes of the same file interleave
 * and the state on disk is always one of the states we acknowledged.
 */

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

let tmpCounter = 0;

/**
 * Writes all of `data` at the fd's position; a write the kernel cuts short is retried
 * for the rest, so a full disk surfaces as ENOSPC (or a ShortWriteError), never as
 * silently missing bytes.
 */
function writeAll(fd: number, data: string | Buffer, what: string): void {
  const buf = typeof data === "string" ? Buffer.from(data) : data;
  let off = 0;
  while (off < buf.length) {
    const n = fs.writeSync(fd, buf, off, buf.length - off);
    if (n <= 0) throw new ShortWriteError(what, off, buf.length);
    off += n;
  }
}

/**
 * Replace `file` atomically: temp file, fsync, rename, fsync of the directory.
 * `durable: false` skips both fsyncs, for derived files a crash may leave behind or
 * empty (they are checked when read and derived again).
 */
export function writeFileAtomic(file: string, data: string | Buffer, o: { durable?: boolean } = {}): void {
  const durable = o.durable ?? true;
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${++tmpCounter}.tmp`);
  const fd = fs.openSync(tmp, "w", 0o600);
  try {
    try {
      writeAll(fd, data, tmp);
      if (durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    // A failed write (full disk) must not leave its partial temp file taking space.
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  if (durable) fsyncDir(dir);
}

/**
 * Make `file` the same bytes as `src` without copying them: a hard link put in place
 * atomically (a copy only where the filesystem refuses links). The directory is fsynced.
 */
export function linkFileAtomic(src: string, file: string): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${++tmpCounter}.tmp`);
  try {
    fs.linkSync(src, tmp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EPERM" && code !== "EXDEV" && code !== "EMLINK" && code !== "ENOTSUP") throw e;
    fs.copyFileSync(src, tmp);
    const fd = fs.openSync(tmp, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
  fs.renameSync(tmp, file);
  fsyncDir(dir);
}

export function ensureDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export interface JsonLines {
  values: unknown[];
  /** The text of each of `values`, as it is in the file (lets a reader skip re-encoding). */
  lines: string[];
  /** Bytes of the file up to its last complete line: what later appends continue from. */
  validBytes: number;
  /** 1-based numbers of complete lines that are not JSON (values holds no entry for them). */
  badLines: number[];
  /** The raw text of each bad line. */
  badText: string[];
}

/**
 * Reads a JSON-lines file. A torn last line (a crash or failed write mid-append) is
 * not part of the result and is cut off the file when possible (if the file cannot be
 * written now, `validBytes` still says where appends must continue from). Lines that
 * are complete but not JSON are reported, not thrown: the caller decides.
 */
export function readJsonLinesLenient(file: string): JsonLines {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { values: [], lines: [], validBytes: 0, badLines: [], badText: [] };
    throw e;
  }
  const end = buf.lastIndexOf(0x0a) + 1;
  if (end < buf.length) {
    try {
      fs.truncateSync(file, end);
    } catch {
      // read-only or failing storage: appends truncate to validBytes before writing
    }
  }
  const out: JsonLines = { values: [], lines: [], validBytes: end, badLines: [], badText: [] };
  const lines = buf.subarray(0, end).toString("utf8").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]) continue;
    try {
      out.values.push(JSON.parse(lines[i]));
      out.lines.push(lines[i]);
    } catch {
      out.badLines.push(i + 1);
      out.badText.push(lines[i]);
    }
  }
  return out;
}

/** Bytes of the open file up to (and including) its last newline: where its last whole line ends. */
export function wholeLinesLength(fd: number, size: number = fs.fstatSync(fd).size): number {
  const chunk = Buffer.alloc(64 * 1024);
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - chunk.length);
    const n = fs.readSync(fd, chunk, 0, end - start, start);
    const i = chunk.subarray(0, n).lastIndexOf(0x0a);
    if (i >= 0) return start + i + 1;
    end = start;
  }
  return 0;
}

/**
 * Appends `text` to the file open at `fd` (O_APPEND) whose valid content is `validBytes`
 * long: anything past that (a torn tail, a failed earlier append) is cut first; on a
 * failed write the file is cut back to `validBytes`, so a log never holds a partial line.
 * Returns the new valid length. `checkSize: false` skips the length check when the caller
 * knows the file ends at `validBytes` (its last append through this fd succeeded).
 */
export function appendAtomically(fd: number, validBytes: number, text: string, what: string, checkSize = true): number {
  if (checkSize && fs.fstatSync(fd).size !== validBytes) fs.ftruncateSync(fd, validBytes);
  const buf = Buffer.from(text);
  try {
    writeAll(fd, buf, what);
  } catch (e) {
    try {
      fs.ftruncateSync(fd, validBytes);
    } catch {
      // cut again before the next append (the size check above)
    }
    throw e;
  }
  return validBytes + buf.length;
}

/** Removes leftovers of interrupted atomic writes. */
export function removeTempFiles(dir: string): void {
  for (const f of fs.readdirSync(dir)) if (f.startsWith(".") && f.endsWith(".tmp")) fs.rmSync(path.join(dir, f), { force: true });
}
