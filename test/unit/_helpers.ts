// Shared helpers for the unit and output tests (not a test file itself).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createDaemon, type Daemon, type DaemonOptions } from "../../src/server.js";
import { gateReply, type Reply as GateReply } from "../helpers/conformance.js";

export function tmpDir(prefix = "vbx-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

let specCounter = 0;
/** Writes a spec object as JSON (or raw text) into `dir`; returns its path. */
export function writeSpec(dir: string, spec: unknown, name?: string): string {
  const file = path.join(dir, name ?? `spec-${++specCounter}.json`);
  fs.writeFileSync(file, typeof spec === "string" ? spec : JSON.stringify(spec, null, 1));
  return file;
}

export const MOCK = { mode: "mock" } as const;

export function workflow(name: string, steps: unknown[], extra: Record<string, unknown> = {}) {
  return { api_version: "v1", kind: "workflow", name, sandbox: MOCK, workflow: { steps, ...extra } };
}

export interface TestDaemon {
  d: Daemon;
  url: string;
  stateDir: string;
}

export async function startDaemon(stateDir: string, opts: Partial<DaemonOptions> = {}): Promise<TestDaemon> {
  const d = await createDaemon({ stateDir, vm: false, ...opts });
  const { url } = await d.listen("tcp://127.0.0.1:0");
  return { d, url, stateDir };
}

export interface Reply {
  status: number;
  contentType: string;
  bytes: Buffer;
  text: string;
  json: any;
}

/** Every reply passes the conformance gate (openapi.yaml) before the test sees it. */
export async function api(url: string, method: string, p: string, body?: unknown): Promise<Reply> {
  const res = await fetch(url + p, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  // The path as fetch sent it (it resolves dot segments).
  return toReply({ method, path: new URL(url + p).pathname, status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) });
}

function toReply(reply: GateReply & { body: Buffer }): Reply {
  gateReply(reply);
  const { status, body: bytes } = reply;
  const contentType = (reply.headers instanceof Headers ? reply.headers.get("content-type") : (reply.headers["content-type"] as string | undefined)) ?? "";
  const text = bytes.toString("utf8");
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status, contentType, bytes, text, json };
}

/** Polls `check` every 20 ms until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** Waits until GET /v1/runs/{id} is terminal; returns the RunState. */
export async function waitTerminal(url: string, id: string, timeoutMs = 20_000): Promise<any> {
  return waitFor(async () => {
    const r = await api(url, "GET", `/v1/runs/${id}`);
    return r.status === 200 && TERMINAL.has(r.json.status) ? r.json : undefined;
  }, `run ${id} to be terminal`, timeoutMs);
}

/** Waits until the run has an event matching `pred`; returns the RunState. */
export async function waitEvent(url: string, id: string, pred: (e: any) => boolean, what: string, timeoutMs = 20_000): Promise<any> {
  return waitFor(async () => {
    const r = await api(url, "GET", `/v1/runs/${id}`);
    return r.status === 200 && r.json.events.some(pred) ? r.json : undefined;
  }, what, timeoutMs);
}

/** Creates a run and returns its id. */
export async function createRun(url: string, file: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await api(url, "POST", "/v1/runs", { file, ...extra });
  if (r.status !== 200) throw new Error(`create failed: ${r.status} ${r.text}`);
  return r.json.run_id;
}

export function assertGapless(events: Array<{ seq: number }>): void {
  events.forEach((e, i) => {
    if (e.seq !== i) throw new Error(`seq gap at index ${i}: ${e.seq}`);
  });
}

/** Like api(), but sends the path exactly as given (fetch would normalise `..` and `%2e%2e` away). */
export async function rawApi(url: string, method: string, p: string, body?: unknown): Promise<Reply> {
  const { request } = await import("node:http");
  const u = new URL(url);
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, method, path: p, headers: data ? { "content-type": "application/json", "content-length": data.length } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          try {
            resolve(toReply({ method, path: p, status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
          } catch (err) {
            reject(err);
          }
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}
