/**
 * Provider keys on the daemon host: the operator's secrets file (`voidbox serve
 * --provider-secrets FILE`, lines `NAME=value`, `#` comments, mode 0600) first, then
 * the daemon's environment. The file is read when a stage needs a key, so a rotated key
 * is picked up without a restart. Messages name the file and the variable, never a value.
 */
import fs from "node:fs";
import { SandboxError } from "./types.js";

/** Secrets files are a few lines; anything bigger is refused. */
const MAX_SECRETS_BYTES = 64 * 1024;

export function parseSecrets(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const t = line.trim();
    if (!t || t.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(t);
    if (!m) continue;
    let v = m[2];
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0])) v = v.slice(1, -1);
    out.set(m[1], v);
  }
  return out;
}

/** Checks the file is usable (regular, not readable by group/other, small); throws SandboxError. */
export function readSecretsFile(file: string): Map<string, string> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new SandboxError(`provider secrets file ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
  if (!st.isFile()) throw new SandboxError(`provider secrets file ${file} is not a regular file`);
  if (st.mode & 0o077) throw new SandboxError(`provider secrets file ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  if (st.size > MAX_SECRETS_BYTES) throw new SandboxError(`provider secrets file ${file} is over ${MAX_SECRETS_BYTES} bytes`);
  try {
    return parseSecrets(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SandboxError(`provider secrets file ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
}

/** The secret `name` from the file (when given and it has it), else from `env`; undefined when neither has it. */
export function readSecret(name: string, file: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  const fromFile = file ? readSecretsFile(file).get(name) : undefined;
  return fromFile || env[name] || undefined;
}
