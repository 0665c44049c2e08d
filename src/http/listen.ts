import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import type { Express } from "express";
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

export async function listen(app: Express, target: ListenTarget, limits: Pick<Limits, "headersTimeoutMs" | "requestTimeoutMs" | "idleTimeoutMs" | "maxConnections"> = DEFAULT_LIMITS): Promise<Listener> {
  const server = http.createServer(app);
  server.keepAliveTimeout = limits.idleTimeoutMs;
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  // Requests node's HTTP parser rejects (bad request line, header overflow, …) still get an ApiError.
  server.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    if (!socket.writable) return socket.destroy();
    const tooBig = err.code === "HPE_HEADER_OVERFLOW";
    const body = JSON.stringify({ code: "INVALID_PARAMS", message: tooBig ? "request headers too large" : `malformed HTTP request (${err.code ?? "parse error"})`, retryable: false });
    socket.end(
      `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  const sockets = new Set<net.Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  if (target.kind === "unix") {
    await clearStaleSocket(target.path);
    // The socket is created 0600 from the start: no window where others could connect.
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(target.path, resolve));
    } finally {
      process.umask(old);
    }
  } else {
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(target.port, target.host, resolve));
  }
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
