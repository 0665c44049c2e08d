import { posix } from "node:path";

/** Every stage works in /workspace; files handed back to the host are named relative to it. */
export const WORKSPACE = "/workspace";

/** `/workspace/x/y` or `x/y` → `x/y`; null for anything outside /workspace (absolute elsewhere, `..`). */
export function workspaceRelative(p: string): string | null {
  const rel = posix.normalize(p.startsWith(`${WORKSPACE}/`) ? p.slice(WORKSPACE.length + 1) : p);
  if (posix.isAbsolute(rel) || rel === "." || rel.split("/").includes("..")) return null;
  return rel;
}
