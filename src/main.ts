#!/usr/bin/env node
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { Client, ClientError, type RunEvent } from "./client/client.js";
import { ConfigError, defaultSocketPath, defaultStateDir, resolveToken, type Env } from "./config.js";
import { isLoopbackHost, parseListen } from "./http/listen.js";
import { createDaemon } from "./server.js";
import { DEFAULT_LIMITS, limitsFromFlags, SERVE_LIMIT_FLAGS } from "./limits.js";

function showDefault(v: number, kind: "bytes" | "count" | "ms"): string {
  if (kind === "ms") return `${v} ms`;
  if (kind === "count") return String(v);
  for (const [unit, size] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) if (v >= size && v % size === 0) return `${v / size}${unit}`;
  return String(v);
}

const USAGE = `voidbox — run workflows, pipelines and agents in QEMU micro-VMs

usage:
  voidbox serve [--listen URL]... [--state-dir DIR] [--no-auth] [--token-file FILE]
                [--accel auto|kvm|tcg] [--kernel FILE --initramfs FILE] [--log-level LEVEL]
                [--spec-root DIR]... [LIMIT FLAGS]
      URL: tcp://HOST:PORT or unix:///PATH (default: the Unix socket ${"$"}XDG_RUNTIME_DIR/voidbox.sock, …)
      URL unix:// paths are at most 107 bytes; --no-auth is only accepted for loopback TCP addresses
      one daemon per --state-dir: a second one exits 2 naming the holder's pid and URLs
      --spec-root DIR: POST /v1/runs {file} may only name files under DIR (repeatable; default: anywhere)
      limits (sizes take KiB/MiB/GiB suffixes):
${Object.entries(SERVE_LIMIT_FLAGS)
  .map(([flag, f]) => `        --${flag.padEnd(20)} ${f.help} (default ${showDefault(DEFAULT_LIMITS[f.key], f.kind)})`)
  .join("\n")}
  voidbox run FILE [--run-id ID] [--daemon URL] [--token-file FILE] [--json]
      start a run and show its events live until it ends; exits with the run's exit code
  voidbox status RUN_ID | events RUN_ID | cancel RUN_ID [--reason TEXT] | list [--state active|terminal] | health
      [--daemon URL] [--token-file FILE]   (default daemon: ${"$"}VOIDBOX_DAEMON_URL, else the Unix socket)
`;

async function serve(argv: string[], env: Env): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h", default: false },
      listen: { type: "string", multiple: true },
      "state-dir": { type: "string" },
      "no-auth": { type: "boolean", default: false },
      "token-file": { type: "string" },
      accel: { type: "string", default: "auto" },
      kernel: { type: "string" },
      initramfs: { type: "string" },
      "log-level": { type: "string", default: env.VOIDBOX_LOG_LEVEL ?? "info" },
      "spec-root": { type: "string", multiple: true },
      ...Object.fromEntries(Object.keys(SERVE_LIMIT_FLAGS).map((f) => [f, { type: "string" as const }])),
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const limits = limitsFromFlags(values, (values["spec-root"] ?? []).map((d) => path.resolve(d)));
  // Asynchronous log writes: under load, lines written while a write is in flight are
  // coalesced instead of costing a blocking syscall each (flushed at shutdown).
  const log = pino({ level: values["log-level"], base: { name: "voidbox" } }, pino.destination({ dest: 1, sync: false }));
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
  const daemon = await createDaemon({
    stateDir,
    auth: token ? { token } : null,
    log,
    limits,
    vm: { accel, kernel: values.kernel, initramfs: values.initramfs },
  });
  try {
    for (const l of listens) await daemon.listen(l);
  } catch (e) {
    // Stop what start-up began (the guest-boot probe's VM) before exiting with the error.
    await daemon.close();
    throw e;
  }
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
  // Last line of defence. Every write path has an owner that decides what its failure
  // means (RunService.storageFault, the 507 reply, best-effort housekeeping), so a
  // rejection nobody handled is a bug: it is logged at error level, visibly, and the
  // daemon keeps serving the other runs rather than dying with all of them.
  process.on("unhandledRejection", (reason) => log.error({ err: reason }, "BUG: unhandled promise rejection (daemon keeps serving)"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  return -1; // keeps running
}

function clientFrom(values: { daemon?: string; "token-file"?: string }, env: Env): Client {
  const url = values.daemon ?? env.VOIDBOX_DAEMON_URL ?? `unix://${defaultSocketPath(env)}`;
  const token = url.startsWith("unix://") ? null : resolveToken(values["token-file"], env, false);
  return new Client(url.replace(/^tcp:/, "http:"), token);
}

function formatEvent(e: RunEvent): string {
  const where = e.stage_name ? ` [${e.stage_name}]` : "";
  const p = e.payload as Record<string, unknown> | null;
  const extra =
    e.event_type === "microvm.spawned" ? ` [pid ${p?.pid}]` : e.event_type === "stage.completed" || e.event_type === "stage.failed" ? ` (${p?.duration_ms} ms, exit ${p?.exit_code})` : "";
  return `${e.timestamp}  #${String(e.seq).padStart(3)}  ${e.event_type.padEnd(18)}${where} ${e.message}${extra}`;
}

async function runCommand(argv: string[], env: Env): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { daemon: { type: "string" }, "token-file": { type: "string" }, "run-id": { type: "string" }, json: { type: "boolean", default: false } },
  });
  if (positionals.length !== 1) throw new Error("usage: voidbox run FILE");
  const file = path.resolve(positionals[0]);
  if (!fs.existsSync(file)) throw new Error(`spec file not found: ${file}`);
  const client = clientFrom(values, env);
  const created = await client.createRun({ file, run_id: values["run-id"] });
  process.stdout.write(values.json ? "" : `run ${created.run_id} started (${file})\n`);
  for await (const e of client.follow(created.run_id)) process.stdout.write((values.json ? JSON.stringify(e) : formatEvent(e)) + "\n");
  const run = await client.getRun(created.run_id);
  if (!values.json) {
    const boots = run.events.filter((e) => e.event_type === "microvm.spawned").map((e) => `${e.stage_name}: ${(e.payload as { boot_ms: number }).boot_ms} ms`);
    process.stdout.write(`\nrun ${run.id}: ${run.status}${run.exit_code !== null ? ` (exit code ${run.exit_code})` : ""}${run.error ? ` — ${run.error}` : ""}\n`);
    if (run.report?.output) process.stdout.write(`output:\n${run.report.output.trimEnd().replace(/^/gm, "  ")}\n`);
    if (boots.length) process.stdout.write(`micro-VM boot times: ${boots.join(", ")}\n`);
  }
  return run.status === "succeeded" ? 0 : run.exit_code && run.exit_code > 0 ? run.exit_code : 1;
}

async function simpleCommand(cmd: string, argv: string[], env: Env): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { daemon: { type: "string" }, "token-file": { type: "string" }, reason: { type: "string" }, state: { type: "string" } },
  });
  const client = clientFrom(values, env);
  const id = positionals[0];
  const need = () => {
    if (!id) throw new Error(`usage: voidbox ${cmd} RUN_ID`);
    return id;
  };
  const out = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + "\n");
  if (cmd === "health") out(await client.health());
  else if (cmd === "status") out(await client.getRun(need()));
  else if (cmd === "events") for (const e of await client.events(need())) process.stdout.write(formatEvent(e) + "\n");
  else if (cmd === "cancel") out(await client.cancelRun(need(), values.reason));
  else if (cmd === "list") out(await client.listRuns(values.state === "active" || values.state === "terminal" ? values.state : undefined));
  return 0;
}

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  const env: Env = process.env;
  switch (cmd) {
    case "serve":
      return serve(rest, env);
    case "run":
      return runCommand(rest, env);
    case "status":
    case "events":
    case "cancel":
    case "list":
    case "health":
      return simpleCommand(cmd, rest, env);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command ${cmd}\n\n${USAGE}`);
      return 2;
  }
}

main().then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`voidbox: ${e instanceof ClientError || e instanceof Error ? e.message : String(e)}\n`);
    // Bad flags, files or variables the operator gave (and unknown options) are usage errors.
    const usage = e instanceof ConfigError || (e as NodeJS.ErrnoException)?.code?.startsWith?.("ERR_PARSE_ARGS") === true;
    process.exitCode = usage ? 2 : 1;
  },
);
