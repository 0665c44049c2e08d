import path from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { ConfigError, defaultSocketPath, defaultStateDir, resolveToken, type Env } from "../config.js";
import { isLoopbackHost, parseListen } from "../http/listen.js";
import { limitsFromFlags, SERVE_LIMIT_FLAGS } from "../limits.js";
import { readSecretsFile } from "../sandbox/secrets.js";
import { createDaemon, type Daemon } from "../server.js";
import { prettyDestination } from "./pretty-log.js";

/** `voidbox serve`: runs the daemon until SIGTERM/SIGINT; bad flags throw ConfigError (exit 2). */
export async function serve(argv: string[], env: Env): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: "string", multiple: true },
      "state-dir": { type: "string" },
      "no-auth": { type: "boolean", default: false },
      "token-file": { type: "string" },
      accel: { type: "string", default: "auto" },
      kernel: { type: "string" },
      initramfs: { type: "string" },
      "log-level": { type: "string", default: env.VOIDBOX_LOG_LEVEL ?? "info" },
      "log-format": { type: "string", default: "json" },
      "spec-root": { type: "string", multiple: true },
      "mount-root": { type: "string", multiple: true },
      "provider-secrets": { type: "string" },
      ...Object.fromEntries(Object.keys(SERVE_LIMIT_FLAGS).map((f) => [f, { type: "string" as const }])),
    },
  });
  const limits = limitsFromFlags(values, (values["spec-root"] ?? []).map((d) => path.resolve(d)));
  limits.mountRoots = (values["mount-root"] ?? []).map((d) => path.resolve(d));
  if (values["provider-secrets"] !== undefined) {
    limits.providerSecretsFile = path.resolve(values["provider-secrets"]);
    // Checked now so a wrong path or mode stops the start; it is read again per stage (rotation).
    try {
      readSecretsFile(limits.providerSecretsFile);
    } catch (e) {
      throw new ConfigError(`--provider-secrets: ${(e as Error).message}`);
    }
  }
  // Asynchronous log writes, batched: lines are written once 4 KiB are pending or every
  // 100 ms, not one write each (a request's log line cost as much CPU as serving it);
  // flushed at exit. A kill -9 loses at most the last 100 ms of lines.
  const format = values["log-format"];
  if (format !== "json" && format !== "pretty") throw new ConfigError(`--log-format must be json or pretty (got ${format})`);
  const log = pino(
    { level: values["log-level"], base: { name: "voidbox" } },
    format === "pretty" ? prettyDestination(process.stdout) : pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 100 }),
  );
  const accel = values.accel;
  if (accel !== "auto" && accel !== "kvm" && accel !== "tcg") throw new ConfigError(`--accel must be auto, kvm or tcg (got ${accel})`);
  if (!!values.kernel !== !!values.initramfs) throw new ConfigError("--kernel and --initramfs go together");
  const listens = values.listen?.length ? values.listen : [`unix://${defaultSocketPath(env)}`];
  // Every listen URL is checked before anything starts (a bad second one must not leave the first bound).
  const tcpHosts = listens.map(parseListen).flatMap((t) => (t.kind === "tcp" ? [t.host] : []));
  let token: string | null = null;
  if (tcpHosts.length && values["no-auth"]) {
    const exposed = tcpHosts.filter((h) => !isLoopbackHost(h));
    if (exposed.length)
      throw new ConfigError(`--no-auth is only allowed on loopback TCP addresses (127.0.0.0/8, ::1, localhost); ${exposed.join(", ")} would serve anyone who can reach it without a token`);
    log.warn("--no-auth: TCP listeners accept requests without a bearer token; use only on loopback for development and conformance suites");
  } else if (tcpHosts.length) token = resolveToken(values["token-file"], env, true);

  const stateDir = path.resolve(values["state-dir"] ?? defaultStateDir(env));
  // The handlers are in place before the listeners are bound: health answers while the
  // API still loads, so a client may already signal. What arrives before the daemon
  // exists is acted on once it does (the default action would kill the process).
  let daemon: Daemon | null = null;
  let early: "SIGTERM" | "SIGINT" | "SIGUSR2" | null = null;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    const hard = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      process.exit(1);
    }, 30_000);
    hard.unref();
    daemon!.close().then(
      () => {
        log.flush();
        process.exit(0);
      },
      (e) => {
        log.error({ err: e }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  // A drain (SIGUSR2, POST /v1/drain or `voidbox drain`) lets active runs finish, then exits 0.
  const drain = () => {
    log.info({ signal: "SIGUSR2" }, "drain requested");
    void daemon!.drain();
  };
  const on = (signal: "SIGTERM" | "SIGINT" | "SIGUSR2") => {
    if (!daemon) early = early === "SIGTERM" || early === "SIGINT" ? early : signal;
    else if (signal === "SIGUSR2") drain();
    else stop(signal);
  };
  // Last line of defence. Every write path has an owner that decides what its failure
  // means (RunService.storageFault, the 507 reply, best-effort housekeeping), so a
  // rejection nobody handled is a bug: it is logged at error level, visibly, and the
  // daemon keeps serving the other runs rather than dying with all of them.
  process.on("unhandledRejection", (reason) => log.error({ err: reason }, "BUG: unhandled promise rejection (daemon keeps serving)"));
  for (const signal of ["SIGTERM", "SIGINT", "SIGUSR2"] as const) process.on(signal, () => on(signal));

  daemon = await createDaemon({
    stateDir,
    auth: token ? { token } : null,
    log,
    limits,
    vm: { accel, kernel: values.kernel, initramfs: values.initramfs },
    // Bound during start-up (health answers before the API is loaded); a bind error
    // stops what start-up began (the guest-boot probe's VM) and is thrown here.
    listen: listens,
  });
  log.info({ state_dir: stateDir }, "daemon ready");
  void daemon.drained.then(() => {
    log.flush();
    process.exit(0);
  });
  if (early) on(early);
  return -1; // keeps running
}
