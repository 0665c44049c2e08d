import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import pino, { type Logger } from "pino";
import type { Express } from "express";
import type { Document } from "openapi-backend";
import { createApi, createApp } from "./http/app.js";
import { healthHandlers, type Health } from "./http/handlers/health.js";
import { runHandlers } from "./http/handlers/runs.js";
import { sessionHandlers } from "./http/handlers/sessions.js";
import { stageHandlers } from "./http/handlers/stages.js";
import { listen, parseListen, type Listener } from "./http/listen.js";
import { defaultIds, type IdSource } from "./ids.js";
import { RunService, type VmProvider } from "./runs/service.js";
import { RunStore } from "./store/runs.js";
import { SessionStore } from "./store/sessions.js";
import { DEFAULT_LIMITS, type Limits } from "./limits.js";
import { detectVm, type VmSetup, type VmSetupOptions } from "./sandbox/vm-setup.js";

/** The checkout (or installed package) root: openapi.yaml and build/guest live there. */
export const PROJECT_ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));
function findRoot(dir: string): string {
  // src/ when run from source, dist/src/ when compiled
  while (!fs.existsSync(path.join(dir, "openapi.yaml"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find openapi.yaml above " + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}
const VERSION = (JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string }).version;

export interface DaemonOptions {
  /** Where runs, events, sessions and artifacts live. Required: never read from the environment here. */
  stateDir: string;
  /** Bearer token for TCP listeners; null = no auth (loopback dev, conformance suites). */
  auth?: { token: string } | null;
  log?: Logger;
  /** Micro-VM setup: detected (default), or given (tests inject one, or `false` for mock-only). */
  vm?: VmSetupOptions | VmProvider | false;
  now?: () => number;
  ids?: IdSource;
  /** Bounds on output, artifacts, connections and disk (default DEFAULT_LIMITS). */
  limits?: Partial<Limits>;
}

export interface Daemon {
  app: Express;
  service: RunService;
  listen(spec: string): Promise<Listener>;
  /** Stops accepting, fails active runs durably, stops every VM, flushes state. */
  close(): Promise<void>;
}

/** Parsed once per process; each daemon gets its own copy (openapi-backend dereferences it in place). */
let definition: Document | undefined;
function loadDefinition(): Document {
  definition ??= parseYaml(fs.readFileSync(path.join(PROJECT_ROOT, "openapi.yaml"), "utf8"), { maxAliasCount: -1 }) as Document;
  return structuredClone(definition);
}

export async function createDaemon(opts: DaemonOptions): Promise<Daemon> {
  const log = opts.log ?? pino({ level: "silent" });
  const now = opts.now ?? Date.now;
  const ids = opts.ids ?? defaultIds(now);
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const store = new RunStore(opts.stateDir);
  const sessions = new SessionStore(opts.stateDir);

  let vmSetup: VmSetup | null = null;
  let vm: VmProvider;
  if (opts.vm === false) vm = { sandbox: null, unavailableReason: "micro-VMs are disabled for this daemon" };
  else if (opts.vm && "unavailableReason" in opts.vm) vm = opts.vm;
  else {
    vmSetup = await detectVm({ ...opts.vm, stateDir: opts.stateDir, projectRoot: PROJECT_ROOT, log });
    vm = vmSetup.provider;
  }

  const service = new RunService({ store, ids, now, log, vm, limits });
  const quarantined = service.restore();
  const health = (): Health => ({
    status: "ok",
    persistence: "json-files",
    version: VERSION,
    accelerator: vmSetup?.accelerator ?? null,
    guest_kernel: vmSetup?.kernelVersion ?? null,
    sandbox_modes: vm.sandbox ? ["mock", "local", "auto"] : ["mock", "auto"],
    quarantined_files: quarantined,
  });

  const handlers = {
    ...healthHandlers(health),
    ...runHandlers(service, { heartbeatMs: limits.sseHeartbeatMs, stallTimeoutMs: limits.sseStallTimeoutMs }),
    ...stageHandlers(service, store),
    ...sessionHandlers(sessions, now),
  };
  const api = await createApi(loadDefinition());
  const openApp = createApp({ api, handlers, log, token: null });
  const authApp = opts.auth ? createApp({ api, handlers, log, token: opts.auth.token }) : openApp;
  const listeners: Listener[] = [];
  let closed = false;

  return {
    app: openApp,
    service,
    async listen(spec: string) {
      const target = parseListen(spec);
      // The Unix socket is protected by its file mode; TCP needs the bearer token.
      const l = await listen(target.kind === "unix" ? openApp : authApp, target, limits);
      listeners.push(l);
      log.info({ url: l.url, auth: target.kind === "tcp" && !!opts.auth }, "listening");
      return l;
    },
    async close() {
      if (closed) return;
      closed = true;
      const stopping = Promise.all(listeners.map((l) => l.close()));
      await service.shutdown(10_000);
      await vmSetup?.stopAll(5_000);
      store.close();
      await stopping;
    },
  };
}
