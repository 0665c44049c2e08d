/**
 * What makes a file "the same" for a cache keyed by it (the guest-probe verdicts, the
 * micro-VM snapshots): its real path, size, mtime and inode.
 */
import fs from "node:fs";
import path from "node:path";

/** `<path>@<size>:<mtime>:<inode>`; a file that cannot be stat'ed is "missing". */
export function fileIdentity(file: string): string {
  try {
    const real = fs.realpathSync(file);
    const st = fs.statSync(real);
    return `${real}@${st.size}:${Math.trunc(st.mtimeMs)}:${st.ino}`;
  } catch {
    return `${file}@missing`;
  }
}

/** Identity of a binary named bare (looked up on PATH) or by path. */
export function fileIdentityOnPath(binary: string): string {
  if (binary.includes("/")) return fileIdentity(binary);
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir) continue;
    const p = path.join(dir, binary);
    if (fs.existsSync(p)) return fileIdentity(p);
  }
  return `${binary}@missing`;
}
