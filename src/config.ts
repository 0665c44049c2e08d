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

function defaultTokenPath(env: Env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), ".config");
  return path.join(base, "voidbox", "daemon-token");
}

/**
 * A startup refusal caused by a flag, a file or a variable the operator gave: the
 * message names it, and `voidbox serve` exits with code 2 (usage) instead of 1.
 */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * RFC 6750 b64token: the only characters a client can send after `Bearer `. Anything
 * else (a space, a NUL, non-ASCII) would make a daemon no request can authenticate to.
 */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** Refuses a token a client could not send; `source` names where it came from. */
export function checkToken(token: string, source: string): string {
  if (!token) throw new ConfigError(`${source} is empty`);
  if (!B64TOKEN.test(token)) {
    const bad = [...token].find((c) => !/[A-Za-z0-9\-._~+/=]/.test(c));
    const code = bad?.codePointAt(0) ?? 0;
    const found = bad === undefined ? "an = before the end" : code < 0x21 || code > 0x7e ? `U+${code.toString(16).toUpperCase().padStart(4, "0")}` : JSON.stringify(bad);
    throw new ConfigError(`${source}: a bearer token may only hold A-Z a-z 0-9 - . _ ~ + / and trailing =; found ${found}`);
  }
  return token;
}

/** Reads a token file, refusing one that group or others may read or that holds an unusable token. */
function readTokenFile(file: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new ConfigError(`token file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (st.mode & 0o077) throw new ConfigError(`token file ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  // Surrounding whitespace (the trailing newline of `echo token > file`) is not part of the token.
  return checkToken(fs.readFileSync(file, "utf8").trim(), `token file ${file}`);
}

/**
 * The bearer token, from: --token-file, $VOIDBOX_DAEMON_TOKEN_FILE, $VOIDBOX_DAEMON_TOKEN,
 * else the default token file (generated 64-hex, mode 0600, when `create` and missing).
 */
export function resolveToken(flagFile: string | undefined, env: Env, create: boolean): string | null {
  if (flagFile) return readTokenFile(flagFile);
  if (env.VOIDBOX_DAEMON_TOKEN_FILE) return readTokenFile(env.VOIDBOX_DAEMON_TOKEN_FILE);
  if (env.VOIDBOX_DAEMON_TOKEN) return checkToken(env.VOIDBOX_DAEMON_TOKEN, "$VOIDBOX_DAEMON_TOKEN");
  const file = defaultTokenPath(env);
  if (fs.existsSync(file)) return readTokenFile(file);
  if (!create) return null;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("hex");
  fs.writeFileSync(file, token + "\n", { mode: 0o600, flag: "wx" });
  return token;
}
