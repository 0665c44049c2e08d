import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * Everything the daemon and CLI read from the environment is read here, once, into
 * plain values; the rest of the code gets them as parameters.
 */
export type Env = Record<string, string | undefined>;

/** Default Unix socket: $XDG_RUNTIME_DIR/voidbox.sock, else $TMPDIR/voidbox-<uid>.sock, else /tmp/voidbox-<uid>.sock. */
export function defaultSocketPath(env: Env): string {
  const uid = process.getuid?.() ?? 0;
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, "voidbox.sock");
  if (env.TMPDIR) return path.join(env.TMPDIR, `voidbox-${uid}.sock`);
  return `/tmp/voidbox-${uid}.sock`;
}

/** --state-dir, else $VOIDBOX_STATE_DIR, else ~/.local/state/void-box. */
export function defaultStateDir(env: Env): string {
  return env.VOIDBOX_STATE_DIR || path.join(env.HOME || os.homedir(), ".local", "state", "void-box");
}

export function defaultTokenPath(env: Env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), ".config");
  return path.join(base, "voidbox", "daemon-token");
}

/** Reads a token file, refusing one that group or others may read. */
export function readTokenFile(file: string): string {
  const st = fs.statSync(file);
  if (st.mode & 0o077) throw new Error(`token file ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  const token = fs.readFileSync(file, "utf8").trim();
  if (!token) throw new Error(`token file ${file} is empty`);
  return token;
}

/**
 * The bearer token, from: --token-file, $VOIDBOX_DAEMON_TOKEN_FILE, $VOIDBOX_DAEMON_TOKEN,
 * else the default token file (generated 64-hex, mode 0600, when `create` and missing).
 */
export function resolveToken(flagFile: string | undefined, env: Env, create: boolean): string | null {
  if (flagFile) return readTokenFile(flagFile);
  if (env.VOIDBOX_DAEMON_TOKEN_FILE) return readTokenFile(env.VOIDBOX_DAEMON_TOKEN_FILE);
  if (env.VOIDBOX_DAEMON_TOKEN) return env.VOIDBOX_DAEMON_TOKEN;
  const file = defaultTokenPath(env);
  if (fs.existsSync(file)) return readTokenFile(file);
  if (!create) return null;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("hex");
  fs.writeFileSync(file, token + "\n", { mode: 0o600, flag: "wx" });
  return token;
}
