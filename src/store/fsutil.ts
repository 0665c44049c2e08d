import fs from "node:fs";
import path from "node:path";

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

/** Replace `file` atomically: temp file, fsync, rename, fsync of the directory. */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${++tmpCounter}.tmp`);
  const fd = fs.openSync(tmp, "w", 0o600);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(dir);
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

/**
 * Reads a JSON-lines file, repairing a torn last line (a crash mid-append) by
 * truncating the file to its last complete line. Returns the parsed lines; throws
 * on a corrupt line that is not the last (that is not a torn append).
 */
export function readJsonLines<T>(file: string): T[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  const end = text.lastIndexOf("\n") + 1;
  if (end < text.length) {
    fs.truncateSync(file, Buffer.byteLength(text.slice(0, end)));
    text = text.slice(0, end);
  }
  const out: T[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]) continue;
    try {
      out.push(JSON.parse(lines[i]) as T);
    } catch {
      throw new Error(`${file}: line ${i + 1} is not valid JSON`);
    }
  }
  return out;
}

/** Removes leftovers of interrupted atomic writes. */
export function removeTempFiles(dir: string): void {
  for (const f of fs.readdirSync(dir)) if (f.startsWith(".") && f.endsWith(".tmp")) fs.rmSync(path.join(dir, f), { force: true });
}
