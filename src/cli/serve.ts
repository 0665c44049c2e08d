import path from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { defaultSocketPath, defaultStateDir, resolveToken, type Env } from "../config.js";
import { limitsFromFlags, SERVE_LIMIT_FLAGS } from "../limits.js";
import { createDaemon } from "../server.js";
import { UsageError } from "./errors.js";
import { prettyDestination } from "./pretty-log.js";

/** `voidbox serve`: runs the daemon until SIGTERM/SIGINT. */
export async function serve(argv: string[], env: Env): Promise<void> {
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
      ...Object.fromEntries(Object.keys(SERVE_LIMIT_FLAGS).map((f) => [f, { type: "string" as const }])),
    },
  });
  let limits: ReturnType<typeof limitsFromFlags>;
  try {
    limits = limitsFromFlags(values, (values["spec-root"] ?? []).map((d) => path.resolve(d)));
  } catch (e) {
    throw new UsageError((e as Error).message, "serve");
  }
  // Asynchronous log writes: under load, lines written while a write is in flight are
  // coalesced instead of costing a blocking syscall each (flushed at shutdown).
  const format = values["log-format"];
  if (format !== "json" && format !== "pretty") throw new UsageError(`--log-format must be json or pretty (got ${format})`, "serve");
  const log = pino(
    { level: values["log-level"], base: { name: "voidbox" } },
    format === "pretty" ? prettyDestination(process.stdout) : pino.destination({ dest: 1, sync: false }),
  );
  const accel = values.accel;
  if (accel !== "auto" && accel !== "kvm" && accel !== "tcg") throw new UsageError(`--accel must be auto, kvm or tcg (got ${accel})`, "serve");
  if (!!values.kernel !== !!values.initramfs) throw new UsageError("--kernel and --initramfs go together", "serve");
  const listens = values.listen?.length ? values.listen : [`unix://${defaultSocketPath(env)}`];
  const tcp = listens.some((l) => l.startsWith("tcp://"));
  let token: string | null = null;
  if (tcp && values["no-auth"]) log.warn("--no-auth: TCP listeners accept requests without a bearer token; use only on loopback for development and conformance suites");
  else if (tcp) token = resolveToken(values["token-file"], env, true);

  const stateDir = path.resolve(values["state-dir"] ?? defaultStateDir(env));
  const daemon = await createDaemon({
    stateDir,
    auth: token ? { token } : null,
    log,
    limits,
    vm: { accel, kernel: values.kernel, initramfs: values.initramfs },
  });
  for (const l of listens) await daemon.listen(l);
  log.info({ state_dir: stateDir }, "daemon ready");

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
    daemon.close().then(
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
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
