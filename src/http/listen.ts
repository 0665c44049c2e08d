import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import type { Logger } from "pino";
import { ConfigError } from "../config.js";
import { DEFAULT_LIMITS, type Limits } from "../limits.js";

export interface Listener {
  /** http://host:port for TCP, unix:///path for a socket. */
  url: string;
  close(): Promise<void>;
}

export type ListenTarget = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** sun_path is 108 bytes including the terminating NUL; longer paths are silently truncated by bind(). */
export const MAX_UNIX_PATH_BYTES = 107;

export function parseListen(spec: string): ListenTarget {
  if (spec.startsWith("tcp://")) {
    let u: URL;
    try {
      u = new URL(spec.replace(/^tcp:/, "http:"));
    } catch {
      throw new ConfigError(`--listen ${spec}: expected tcp://HOST:PORT`);
    }
    const port = u.port === "" ? NaN : Number(u.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`--listen ${spec}: a port is required (tcp://HOST:PORT)`);
    return { kind: "tcp", host: u.hostname.replace(/^\[|\]$/g, ""), port };
  }
  const path = spec.startsWith("unix://") ? spec.slice("unix://".length) : spec.startsWith("/") ? spec : null;
  if (path === null) throw new ConfigError(`--listen ${spec}: expected tcp://HOST:PORT or unix:///PATH`);
  const bytes = Buffer.byteLength(path);
  if (bytes === 0 || path.includes("\0")) throw new ConfigError(`--listen ${spec}: a Unix socket path must be non-empty and hold no NUL`);
  if (bytes > MAX_UNIX_PATH_BYTES)
    throw new ConfigError(`--listen ${spec.slice(0, 60)}…: the Unix socket path is ${bytes} bytes; the limit is ${MAX_UNIX_PATH_BYTES} (pick a shorter directory)`);
  return { kind: "unix", path };
}

/** Whether a TCP listen host only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\.\d+\.\d+\.\d+$/.test(h);
}

/** Resolves once listening; rejects with the bind error (and leaves no error listener behind). */
function listening(server: http.Server, start: () => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (e: Error) => reject(e);
    server.once("error", fail);
    server.once("listening", () => {
      server.off("error", fail);
      resolve();
    });
    start();
  });
}

/** A socket path may be reused only if it is a socket nobody answers on. */
async function clearStaleSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to remove it`);
  const alive = await new Promise<boolean>((resolve) => {
    const s = net.connect(path);
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    s.setTimeout(1000, () => done(false));
  });
  if (alive) throw new Error(`another daemon is listening on ${path}`);
  fs.unlinkSync(path);
}

type ConnectionLimits = Pick<Limits, "headersTimeoutMs" | "requestTimeoutMs" | "idleTimeoutMs" | "maxConnections">;

/** Soft RLIMIT_NOFILE of this process, or null when /proc does not say. */
function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync("/proc/self/limits", "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Open HTTP connections of this process, over all listeners. File descriptors are a
 * per-process resource: a flood of connections that used them all would leave the run
 * store unable to open its files (a failed run, or worse), so connections may only use
 * what the fd limit leaves after a reserve for the daemon's own files, pipes and VMs.
 */
let openConnections = 0;

/** How many connections the fd limit allows, with a quarter of it (at least 64) kept in reserve. */
function connectionBudget(fdLimit: number | null): number {
  if (fdLimit === null) return Number.POSITIVE_INFINITY;
  return Math.max(1, fdLimit - Math.max(64, Math.floor(fdLimit / 4)));
}

/** At most one log line per `ms` for a noisy condition, with how many times it happened. */
function throttled(ms: number, emit: (count: number, last: unknown) => void): (detail: unknown) => void {
  let count = 0;
  let last: unknown;
  let timer: NodeJS.Timeout | null = null;
  return (detail) => {
    count++;
    last = detail;
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      const n = count;
      count = 0;
      emit(n, last);
    }, ms);
    timer.unref();
  };
}

/**
 * An HTTP listener that no client can take down:
 *  - `maxConnections`: over it, new connections are accepted and closed at once
 *    (Node's 'drop'), so the open-fd count stays bounded;
 *  - a connection must deliver its request head within `headersTimeoutMs` (Node only
 *    times out heads it has started to parse; a connection that sends nothing is cut by
 *    its own inactivity timer) and the whole request within `requestTimeoutMs`; idle
 *    keep-alive connections are closed after `idleTimeoutMs`;
 *  - all listeners of the process together stay within connectionBudget(), so a
 *    flood cannot take the descriptors the run store and the micro-VMs need;
 *  - accept errors (EMFILE/ENFILE) are logged, never thrown. libuv absorbs most EMFILEs
 *    itself (it closes a reserve descriptor, accepts and drops the pending connections);
 *    what still reaches Node used to be an unhandled 'error' event.
 */
export async function listen(app: (req: http.IncomingMessage, res: http.ServerResponse) => void, target: ListenTarget, limits: ConnectionLimits = DEFAULT_LIMITS, log?: Logger): Promise<Listener> {
  // Node checks header/request deadlines every connectionsCheckingInterval (30 s by default).
  const checkEvery = Math.max(100, Math.min(1000, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 2)));
  const server = http.createServer({ connectionsCheckingInterval: checkEvery }, app);
  server.keepAliveTimeout = limits.idleTimeoutMs;
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.maxConnections = limits.maxConnections;
  let where = target.kind === "unix" ? target.path : `${target.host}:${target.port}`;
  const budget = connectionBudget(openFileLimit());
  const dropped = throttled(1000, (n) =>
    log?.warn({ listener: where, dropped: n, max_connections: limits.maxConnections, fd_budget: budget }, "connection limit reached: new connections refused"),
  );
  server.on("drop", dropped);
  const acceptFailed = throttled(1000, (n, err) =>
    log?.error({ listener: where, failures: n, err: String(err) }, "cannot accept connections (out of file descriptors?); pending connections dropped"),
  );
  // Requests node's HTTP parser rejects (bad request line, header overflow, …) still get an ApiError.
  server.on("clientError", (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: net.Socket) => {
    if (!socket.writable) return socket.destroy();
    const tooBig = err.code === "HPE_HEADER_OVERFLOW";
    const body = JSON.stringify({ code: "INVALID_PARAMS", message: tooBig ? "request headers too large" : `malformed HTTP request (${err.code ?? "parse error"})`, retryable: false });
    // A reply to HEAD carries no body (a client would read it as the next reply).
    const head = err.rawPacket?.subarray(0, 5).toString("latin1") === "HEAD ";
    socket.end(
      `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${head ? "" : body}`,
    );
  });
  const sockets = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    if (openConnections >= budget) {
      s.destroy();
      dropped(null);
      return;
    }
    openConnections++;
    sockets.add(s);
    s.on("close", () => {
      openConnections--;
      sockets.delete(s);
    });
    // Until its first request head is complete; Node's own socket timeout handler then
    // destroys it (no request or response to notify). Keep-alive idling is Node's.
    s.setTimeout(limits.headersTimeoutMs);
  });
  server.on("request", (req: http.IncomingMessage) => {
    // A request is being handled: its deadline is requestTimeout, not inactivity (Node
    // has already cleared its keep-alive timer here; server.timeout is 0).
    req.socket.setTimeout(0);
  });
  if (target.kind === "unix") {
    await clearStaleSocket(target.path);
    // The socket is created 0600 from the start: no window where others could connect.
    const old = process.umask(0o177);
    try {
      await listening(server, () => server.listen(target.path));
    } finally {
      process.umask(old);
    }
  } else {
    await listening(server, () => server.listen(target.port, target.host));
  }
  // From now on every server error is an accept failure: logged, never fatal.
  server.on("error", acceptFailed);
  if (target.kind === "tcp") where = `${target.host}:${(server.address() as net.AddressInfo).port}`;
  if (budget < limits.maxConnections)
    log?.info({ listener: where, max_connections: limits.maxConnections, fd_budget: budget }, "open connections are capped lower than --max-connections by the open-file limit (ulimit -n)");
  const addr = server.address();
  const url =
    target.kind === "unix"
      ? `unix://${target.path}`
      : `http://${target.host.includes(":") ? `[${target.host}]` : target.host}:${(addr as net.AddressInfo).port}`;
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Requests in flight get a moment to finish; then connections are cut.
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 2000).unref();
        if (target.kind === "unix") fs.rmSync(target.path, { force: true });
      }),
  };
}
