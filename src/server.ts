import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino, { type Logger } from "pino";
import { apiDocument, componentSchemas, PROJECT_ROOT } from "./openapi-document.js";
import { startingHandler, type RequestHandler } from "./http/starting.js";
import { runHandlers } from "./http/handlers/runs.js";
import { sessionHandlers } from "./http/handlers/sessions.js";
import { stageHandlers } from "./http/handlers/stages.js";
import { healthHandlers, type Health } from "./http/handlers/health.js";
import { fleetHandlers, type DrainStatus } from "./http/handlers/fleet.js";
import { NodeSlots } from "./engine/node-slots.js";
import { Metrics } from "./metrics.js";
import { GatedSandbox } from "./sandbox/gated.js";
import { WarmPool } from "./sandbox/warm-pool.js";
import type { Accelerator, Sandbox, VmProvider } from "./sandbox/types.js";
import { listen, parseListen, type Listener } from "./http/listen.js";
import { defaultIds, type IdSource } from "./ids.js";
import { RunService } from "./runs/service.js";
import { RunStore } from "./store/runs.js";
import { SessionStore } from "./store/sessions.js";
import { compileStateSchemas } from "./store/schemas.js";
import { StorageGuard } from "./store/storage.js";
import { DEFAULT_LIMITS, defaultWarmPool, type Limits } from "./limits.js";
import { noVmHealth, startVmSetup, type VmSetup, type VmSetupOptions } from "./sandbox/vm-setup.js";
import { lockStateDir, type StateLock } from "./state-lock.js";

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
  /**
   * Listen URLs bound during start-up, as soon as health can be answered: they serve
   * GET /v1/health before the API is loaded and hold other requests until it is.
   */
  listen?: string[];
}

export interface Daemon {
  service: RunService;
  listen(spec: string): Promise<Listener>;
  /** Stops accepting, fails active runs durably, stops every VM, flushes state. */
  close(): Promise<void>;
  /**
   * Starts a drain (idempotent; also `POST /v1/drain`): new runs are refused, active
   * ones finish, then the daemon closes; runs still active after `drainTimeoutMs` fail
   * (`daemon_shutdown`) as in close(). Resolves once closed.
   */
  drain(): Promise<void>;
  /** Resolves when a drain, however started, has closed the daemon. */
  readonly drained: Promise<void>;
}

export async function createDaemon(opts: DaemonOptions): Promise<Daemon> {
  const log = opts.log ?? pino({ level: "silent" });
  const now = opts.now ?? Date.now;
  const ids = opts.ids ?? defaultIds(now);
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  // Before anything touches the state dir: leftover-VM cleanup below would otherwise
  // kill a live daemon's micro-VMs, and restore would adopt its runs.
  const lock = await lockStateDir(opts.stateDir);
  try {
    return await startDaemon(opts, lock, log, now, ids, limits);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function startDaemon(opts: DaemonOptions, lock: StateLock, log: Logger, now: () => number, ids: IdSource, limits: Limits): Promise<Daemon> {
  const storage = new StorageGuard(opts.stateDir, limits.minFreeBytes, log);
  const schemas = compileStateSchemas(componentSchemas());
  const store = new RunStore(opts.stateDir);
  const quarantined: string[] = [];
  const sessions = new SessionStore(opts.stateDir, {
    schemas,
    storage,
    onQuarantine: (file, reason) => {
      quarantined.push(file);
      log.error({ file, reason }, "damaged session log lines quarantined");
    },
  });

  const slots = new NodeSlots(limits.maxVms, limits.maxGuestMemoryMib);
  // Gauges are read at scrape time, once `runs` exists.
  const metrics: Metrics = new Metrics({
    stateDir: opts.stateDir,
    vmsLive: () => slots.usage().vms,
    stagesWaiting: () => slots.usage().waiting,
    activeRuns: () => runs.activeCount(),
    draining: () => runs.draining,
  });
  // Every micro-VM, whoever provides the sandbox, goes through the node's slots. The warm
  // pool starts with the sandbox, i.e. only once the guest-boot probe has proven a boot.
  let pool: WarmPool | null = null;
  let poolStopped = false;
  const gate = (sandbox: Sandbox, real: boolean): Sandbox => {
    const size = limits.warmPool === -1 ? (real ? defaultWarmPool(limits) : 0) : limits.warmPool;
    if (size > 0 && !poolStopped) pool = new WarmPool({ inner: sandbox, slots, size, log, onRequest: (r) => metrics.warmPoolRequest(r) });
    return new GatedSandbox(sandbox, slots, metrics, pool);
  };
  const stopPool = (): Promise<void> => {
    poolStopped = true;
    return pool?.stop(2_000) ?? Promise.resolve();
  };
  let vmSetup: VmSetup | null = null;
  let vm: VmProvider;
  if (opts.vm === false) vm = { sandbox: null, unavailableReason: "micro-VMs are disabled for this daemon" };
  else if (opts.vm && "unavailableReason" in opts.vm) vm = { ...opts.vm, sandbox: opts.vm.sandbox && gate(opts.vm.sandbox, false) };
  else {
    // In the background: /v1/health answers at once and says `probing` until it settles.
    vmSetup = startVmSetup({ ...opts.vm, stateDir: opts.stateDir, projectRoot: PROJECT_ROOT, log, limits, now, gate: (x) => gate(x, true) });
    vm = vmSetup.provider;
  }

  const onQuarantine = (file: string) => quarantined.push(file);
  const runs: RunService = new RunService({ store, ids, now, log, vm, limits, storage, schemas, slots, metrics, onQuarantine });
  // A state dir that can be read but not written is served read-only (writes get 507).
  storage.checkWritable();
  quarantined.push(...runs.restore());
  const hostVcpus = os.cpus().length;
  const health = (): Health => {
    const guest = vmSetup ? vmSetup.health() : noVmHealth();
    const disk = storage.health();
    return {
      // Degraded: no guest can boot, or the state dir refuses new runs.
      status: guest.guest_boot === "failed" || disk.storage !== "ok" ? "degraded" : "ok",
      persistence: "json-files",
      version: VERSION,
      ...guest,
      // While probing, local runs are accepted (they wait for the probe).
      sandbox_modes: vm.sandbox || guest.guest_boot === "probing" ? ["mock", "local", "auto"] : ["mock", "auto"],
      quarantined_files: quarantined,
      ...disk,
      capacity: capacity(guest.accelerator === "kvm" || guest.accelerator === "tcg" ? guest.accelerator : null),
    };
  };
  const capacity = (accelerator: Accelerator | null): NonNullable<Health["capacity"]> => {
    const u = slots.usage();
    return {
      accelerator,
      vcpus: hostVcpus,
      guest_memory_mib: limits.maxGuestMemoryMib,
      max_vms: limits.maxVms,
      vms_in_use: u.vms,
      vcpus_in_use: u.vcpus,
      guest_memory_in_use_mib: u.memoryMib,
      stages_waiting_for_vm: u.waiting,
      warm_vms_ready: pool?.stats().ready ?? 0,
      ...(pool ? { warm_pool: pool.stats() } : {}),
      active_runs: runs.activeCount(),
      accepts_runs: runs.refusal() === null,
      draining: runs.draining,
    };
  };

  const listeners: Listener[] = [];
  let closed = false;
  let stopPrecompile = () => {};
  const close = async () => {
    if (closed) return;
    closed = true;
    try {
      stopPrecompile();
      const stopping = Promise.all(listeners.map((l) => l.close()));
      // First, so that stages ending in the shutdown do not make it boot replacements.
      const poolStopping = stopPool();
      await runs.shutdown(10_000);
      await poolStopping;
      await vmSetup?.stopAll(5_000);
      storage.close();
      try {
        store.close();
      } catch (e) {
        log.error({ err: e }, "could not flush the event logs at shutdown"); // a full or read-only state dir
      }
      await stopping;
    } finally {
      // Only once every VM is stopped and the state flushed may another daemon take over.
      await lock.release();
    }
  };

  let drainRun: Promise<void> | undefined;
  let markDrained!: () => void;
  const drained = new Promise<void>((r) => (markDrained = r));
  const drain = (): Promise<void> => {
    drainRun ??= (async () => {
      runs.startDrain();
      // A draining node boots nothing ahead: its idle pool VMs give their memory back now.
      void stopPool();
      log.info({ active_runs: runs.activeCount(), timeout_ms: limits.drainTimeoutMs }, "draining: no new runs; waiting for active runs");
      const idle = await runs.waitIdle(limits.drainTimeoutMs);
      if (!idle) log.warn({ active_runs: runs.activeCount() }, "drain timeout: failing the runs still active");
      await close();
      log.info("drained");
      markDrained();
    })();
    return drainRun;
  };
  const drainStatus = (): DrainStatus => {
    void drain();
    return { draining: true, active_runs: runs.activeCount(), drain_timeout_secs: Math.round(limits.drainTimeoutMs / 1000) };
  };

  const onRequest = metrics.httpRequest.bind(metrics);
  let loaded!: (apps: { open: RequestHandler; auth: RequestHandler }) => void;
  let loadFailed!: (e: unknown) => void;
  const apps = new Promise<{ open: RequestHandler; auth: RequestHandler }>((resolve, reject) => ((loaded = resolve), (loadFailed = reject)));
  apps.catch(() => {}); // start-up reports it; listeners answer held requests with it
  const listenOn = async (spec: string): Promise<Listener> => {
    const target = parseListen(spec);
    // The Unix socket is protected by its file mode; TCP needs the bearer token.
    const token = target.kind === "tcp" && opts.auth ? opts.auth.token : null;
    const ready = apps.then((a) => (token === null ? a.open : a.auth));
    const l = await listen(startingHandler({ health, token, ready, onRequest }), target, limits, log);
    listeners.push(l);
    lock.setUrls(listeners.map((x) => x.url));
    log.info({ url: l.url, auth: token !== null }, "listening");
    return l;
  };

  try {
    for (const spec of opts.listen ?? []) await listenOn(spec);
    // Loaded only now: express and openapi-backend are most of start-up's CPU time, and
    // the listeners above answer health meanwhile.
    const { createApi, createApp, precompileValidators } = await import("./http/app.js");
    const handlers = {
      ...healthHandlers(health),
      ...fleetHandlers({ metrics: async () => ({ text: await metrics.text(), contentType: metrics.contentType }), drain: drainStatus }),
      ...runHandlers(runs, { heartbeatMs: limits.sseHeartbeatMs, stallTimeoutMs: limits.sseStallTimeoutMs }),
      ...stageHandlers(runs),
      ...sessionHandlers(sessions, now),
    };
    const api = await createApi(structuredClone(apiDocument()));
    stopPrecompile = precompileValidators(api);
    const open = createApp({ api, handlers, log, token: null, onRequest });
    loaded({ open, auth: opts.auth ? createApp({ api, handlers, log, token: opts.auth.token, onRequest }) : open });
  } catch (e) {
    loadFailed(e);
    await close(); // stops the probe's VM and releases the lock
    throw e;
  }
  return { service: runs, drain, drained, listen: listenOn, close };
}
