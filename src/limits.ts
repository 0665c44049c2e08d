import os from "node:os";
import { ConfigError } from "./config.js";

/**
 * The daemon's bounds: what one run, stage, client or disk condition may cost before
 * it gets a clear ApiError or a truncation event instead of taking the daemon down.
 * Every field is a `voidbox serve` flag (see SERVE_LIMIT_FLAGS); the defaults are
 * sized so that no single tenant can hold more than a few MiB of daemon memory.
 */
export interface Limits {
  /** Bytes of a stage's stdout (and, separately, stderr) kept per attempt; the rest is dropped and counted. */
  maxStageOutputBytes: number;
  /** `stage.output` events one stage attempt, and `log.chunk` events one run's report, may emit; past it one truncation event. */
  maxOutputEvents: number;
  /** Artifacts one stage may publish. */
  maxArtifactsPerStage: number;
  /** Bytes of all artifacts of one stage together. */
  maxArtifactBytesPerStage: number;
  /** New runs are refused (retryable ApiError) while the state dir's filesystem has less free space. */
  minFreeBytes: number;
  /** Open HTTP connections per listener; over it new connections are refused until some close. */
  maxConnections: number;
  /** A client must send its whole request head within this (slowloris). */
  headersTimeoutMs: number;
  /** …and its whole request within this. */
  requestTimeoutMs: number;
  /** A keep-alive connection with no request in flight is closed after this. */
  idleTimeoutMs: number;
  /** A guest-boot probe boot (TCG, or KVM when forced) must reach its ready marker within this; runs that need a micro-VM wait for the probe. */
  guestProbeTimeoutMs: number;
  /** Failed micro-VM boots (probe and stage) listed in `/v1/health`. */
  bootFailuresKept: number;
  /** Bytes of a run's `input` (POST /v1/runs); over it 400 naming body/input. */
  maxRunInputBytes: number;
  /** A comment line is sent on an idle event stream (SSE) this often, so proxies and clients see it is alive. */
  sseHeartbeatMs: number;
  /** An event stream whose client has not taken what was written for this long is closed (it can resume). */
  sseStallTimeoutMs: number;
  /** When non-empty, `POST /v1/runs {file}` may only name files under these directories (realpath). */
  specRoots: string[];
  /** Host directories `sandbox.mounts` may share with guests (realpath); empty: no mounts. */
  mountRoots: string[];
  /** `NAME=value` lines holding agent providers' API keys (read per stage, before the daemon's environment); absent: the environment only. */
  providerSecretsFile?: string;
  /** Micro-VMs alive at once on this daemon, all runs together; a stage past it waits for a slot. */
  maxVms: number;
  /** MiB of guest memory all live micro-VMs together may take (each VM counts its `sandbox.memory_mb`). */
  maxGuestMemoryMib: number;
  /** After a drain starts, runs still active this long later fail (`daemon_shutdown`) and the daemon stops. */
  drainTimeoutMs: number;
  /**
   * Pre-booted micro-VMs kept ready (the warm pool); 0 disables it. -1 (the default):
   * sized from the host by defaultWarmPool() when the daemon boots real micro-VMs, and
   * no pool for a sandbox injected by a test.
   */
  warmPool: number;
  /** Bytes of events of terminal runs kept in memory once read back from disk (least recently used out first). */
  runCacheBytes: number;
  /** RAM snapshots of booted guests kept under the state dir to start fresh VMs from (one per guest shape); 0: every VM boots. */
  vmSnapshots: number;
}

/** Node capacity defaults from the host: guests mostly wait on I/O and TCG, so 2 VMs per core; 75% of RAM for guests. */
const HOST_MAX_VMS = Math.max(1, 2 * os.cpus().length);
const HOST_GUEST_MEMORY_MIB = Math.max(128, Math.floor((os.totalmem() * 0.75) / 1024 ** 2));

export const DEFAULT_LIMITS: Limits = {
  maxStageOutputBytes: 1024 * 1024,
  maxOutputEvents: 2000,
  maxArtifactsPerStage: 64,
  maxArtifactBytesPerStage: 64 * 1024 * 1024,
  minFreeBytes: 64 * 1024 * 1024,
  maxConnections: 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  idleTimeoutMs: 5_000,
  guestProbeTimeoutMs: 60_000,
  bootFailuresKept: 10,
  maxRunInputBytes: 1024 * 1024,
  sseHeartbeatMs: 15_000,
  sseStallTimeoutMs: 60_000,
  specRoots: [],
  mountRoots: [],
  maxVms: HOST_MAX_VMS,
  maxGuestMemoryMib: HOST_GUEST_MEMORY_MIB,
  drainTimeoutMs: 900_000,
  warmPool: -1,
  runCacheBytes: 32 * 1024 * 1024,
  vmSnapshots: 4,
};

/**
 * The automatic `--warm-pool`: one ready VM per two host cores (each boot costs about
 * a core-second under TCG; more would only burn CPU the running stages need), at most
 * 4, at most an eighth of the guest memory at 256 MiB each, and always below max-vms.
 */
export function defaultWarmPool(limits: Pick<Limits, "maxVms" | "maxGuestMemoryMib">, cores = os.cpus().length): number {
  return Math.max(0, Math.min(4, Math.max(1, Math.floor(cores / 2)), Math.floor(limits.maxGuestMemoryMib / 8 / 256), limits.maxVms - 1));
}

type NumericLimit = Exclude<keyof Limits, "specRoots" | "mountRoots" | "providerSecretsFile">;

/** `voidbox serve` flag → limit, with how its value is read. */
export const SERVE_LIMIT_FLAGS: Record<string, { key: NumericLimit; kind: "bytes" | "count" | "count0" | "ms" | "mib" | "secs"; help: string }> = {
  "max-stage-output": { key: "maxStageOutputBytes", kind: "bytes", help: "stdout/stderr bytes kept per stage attempt" },
  "max-output-events": { key: "maxOutputEvents", kind: "count", help: "stage.output events per stage attempt, log.chunk events per run" },
  "max-artifacts": { key: "maxArtifactsPerStage", kind: "count", help: "artifacts per stage" },
  "max-artifact-bytes": { key: "maxArtifactBytesPerStage", kind: "bytes", help: "artifact bytes per stage" },
  "min-free-space": { key: "minFreeBytes", kind: "bytes", help: "free space the state dir must keep for new runs" },
  "max-connections": { key: "maxConnections", kind: "count", help: "open HTTP connections per listener" },
  "headers-timeout": { key: "headersTimeoutMs", kind: "ms", help: "ms a client has to send a request head" },
  "request-timeout": { key: "requestTimeoutMs", kind: "ms", help: "ms a client has to send a whole request" },
  "idle-timeout": { key: "idleTimeoutMs", kind: "ms", help: "ms an idle keep-alive connection is kept" },
  "probe-timeout": { key: "guestProbeTimeoutMs", kind: "ms", help: "ms the guest-boot probe's VM has to boot" },
  "boot-failures-kept": { key: "bootFailuresKept", kind: "count", help: "failed micro-VM boots listed in /v1/health" },
  "max-run-input": { key: "maxRunInputBytes", kind: "bytes", help: "bytes of a run's input (POST /v1/runs input)" },
  "sse-heartbeat": { key: "sseHeartbeatMs", kind: "ms", help: "ms between heartbeat comments on an idle event stream" },
  "sse-stall-timeout": { key: "sseStallTimeoutMs", kind: "ms", help: "ms an event stream may wait for its client to read before it is closed" },
  "max-vms": { key: "maxVms", kind: "count", help: "micro-VMs alive at once on this daemon, all runs together (2 per host core)" },
  "max-guest-memory": { key: "maxGuestMemoryMib", kind: "mib", help: "MiB of guest memory all live micro-VMs may take (75% of host memory)" },
  "drain-timeout": { key: "drainTimeoutMs", kind: "secs", help: "seconds a drain waits for active runs before failing them" },
  "warm-pool": { key: "warmPool", kind: "count0", help: "pre-booted micro-VMs kept ready for stages, 0 disables (1 per 2 host cores, at most 4)" },
  "run-cache": { key: "runCacheBytes", kind: "bytes", help: "bytes of terminal runs' events kept in memory after they are read back" },
  "vm-snapshots": { key: "vmSnapshots", kind: "count0", help: "RAM snapshots of booted guests kept to start fresh micro-VMs from, one per guest shape; 0: every VM boots (4)" },
};

const UNITS: Record<string, number> = { "": 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** "4MiB", "512k", "1048576" → bytes; throws a message naming the flag. */
function parseBytes(flag: string, value: string): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new ConfigError(`--${flag}: expected a size such as 1048576, 512KiB or 4MiB (got ${JSON.stringify(value)})`);
  return Number(m[1]) * unit;
}

function parseCount0(flag: string, value: string): number {
  if (!/^\d+$/.test(value.trim())) throw new ConfigError(`--${flag}: expected a whole number ≥ 0 (got ${JSON.stringify(value)})`);
  return Number(value);
}

function parseCount(flag: string, value: string): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) throw new ConfigError(`--${flag}: expected a whole number ≥ 1 (got ${JSON.stringify(value)})`);
  return Number(value);
}

/** "4096" (MiB) or a size with a unit ("4GiB") → whole MiB, at least 1. */
function parseMib(flag: string, value: string): number {
  const mib = /^\s*\d+\s*$/.test(value) ? Number(value) : Math.floor(parseBytes(flag, value) / 1024 ** 2);
  if (mib < 1) throw new ConfigError(`--${flag}: expected at least 1 MiB (got ${JSON.stringify(value)})`);
  return mib;
}

/** The limits from `serve` flag values (absent flags keep their defaults). */
export function limitsFromFlags(values: Record<string, unknown>, specRoots: string[] = []): Limits {
  const out: Limits = { ...DEFAULT_LIMITS, specRoots };
  for (const [flag, { key, kind }] of Object.entries(SERVE_LIMIT_FLAGS)) {
    const v = values[flag];
    if (typeof v !== "string") continue;
    out[key] =
      kind === "bytes"
        ? parseBytes(flag, v)
        : kind === "mib"
          ? parseMib(flag, v)
          : kind === "secs"
            ? parseCount(flag, v) * 1000
            : kind === "count0"
              ? parseCount0(flag, v)
              : parseCount(flag, v);
  }
  return out;
}
