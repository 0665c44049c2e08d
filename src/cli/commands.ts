import fs from "node:fs";
import path from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { createClient, type VoidboxClient } from "@voidbox/client";
import { defaultSocketPath, resolveToken, type Env } from "../config.js";
import { EXIT, UsageError } from "./errors.js";
import { formatEvent, runTable } from "./format.js";

const DAEMON_OPTIONS = { daemon: { type: "string" }, "token-file": { type: "string" } } as const;

/** parseArgs whose mistakes are usage errors (exit 2) naming the command. */
function args<O extends NonNullable<ParseArgsConfig["options"]>>(cmd: string, argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, strict: true, options });
  } catch (e) {
    throw new UsageError((e as Error).message, cmd);
  }
}

function positional(cmd: string, positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`voidbox ${cmd} takes exactly one ${what}${positionals.length ? ` (got ${positionals.length})` : ""}`, cmd);
  return positionals[0];
}

function clientFrom(values: { daemon?: string; "token-file"?: string }, env: Env): VoidboxClient {
  const url = values.daemon ?? env.VOIDBOX_DAEMON_URL ?? `unix://${defaultSocketPath(env)}`;
  if (!/^(unix|tcp|https?):\/\//.test(url)) throw new UsageError(`--daemon must be unix:///PATH, tcp://HOST:PORT or http://HOST:PORT (got ${url})`);
  const token = url.startsWith("unix://") ? null : resolveToken(values["token-file"], env, false);
  return createClient({ url, token });
}

const write = (s: string) => process.stdout.write(s);
const json = (v: unknown) => write(JSON.stringify(v, null, 2) + "\n");

export async function runCommand(argv: string[], env: Env): Promise<number> {
  const { values, positionals } = args("run", argv, {
    ...DAEMON_OPTIONS,
    "run-id": { type: "string" },
    json: { type: "boolean", default: false },
    "cancel-on-interrupt": { type: "boolean", default: false },
  });
  const file = path.resolve(positional("run", positionals, "spec FILE"));
  if (!fs.existsSync(file)) throw new UsageError(`spec file not found: ${file}`, "run");
  const client = clientFrom(values, env);
  try {
    const created = await client.createRun({ file, run_id: values["run-id"] });
    const id = created.run_id;
    if (!values.json) write(`run ${id} started (${file})\n`);
    // Ctrl-C leaves the run to the daemon (it is not this process's), unless asked to cancel it.
    const stop = new AbortController();
    let interrupted = false;
    const onInterrupt = () => {
      if (interrupted) process.exit(EXIT.interrupted);
      interrupted = true;
      stop.abort();
    };
    process.once("SIGINT", onInterrupt);
    try {
      for await (const e of client.follow(id, { signal: stop.signal })) write((values.json ? JSON.stringify(e) : formatEvent(e)) + "\n");
    } finally {
      process.off("SIGINT", onInterrupt);
    }
    if (interrupted) {
      if (values["cancel-on-interrupt"]) {
        const c = await client.cancelRun(id, "interrupted (voidbox run --cancel-on-interrupt)");
        process.stderr.write(`\ninterrupted: run ${id} cancelled (state ${c.state})\n`);
      } else {
        process.stderr.write(`\ninterrupted: run ${id} continues in the daemon.\n  follow it:  voidbox events ${id} --follow\n  cancel it:  voidbox cancel ${id}\n`);
      }
      return EXIT.interrupted;
    }
    const run = await client.getRun(id);
    if (!values.json) {
      const boots = run.events.filter((e) => e.event_type === "microvm.spawned").map((e) => `${e.stage_name}: ${(e.payload as { boot_ms: number }).boot_ms} ms`);
      write(`\nrun ${run.id}: ${run.status}${run.exit_code !== null ? ` (exit code ${run.exit_code})` : ""}${run.error ? ` — ${run.error}` : ""}\n`);
      if (run.report?.output) write(`output:\n${run.report.output.trimEnd().replace(/^/gm, "  ")}\n`);
      if (boots.length) write(`micro-VM boot times: ${boots.join(", ")}\n`);
    }
    return run.status === "succeeded" ? EXIT.ok : EXIT.failed;
  } finally {
    await client.close();
  }
}

/** `voidbox validate FILE`: the daemon's own spec checks, locally; no run is created. */
export async function validateCommand(argv: string[]): Promise<number> {
  const { positionals } = args("validate", argv, {});
  const file = positional("validate", positionals, "spec FILE");
  // Loaded here only: the schema compiler is not needed by the other commands.
  const { loadSpec } = await import("../spec/load.js");
  try {
    const spec = await loadSpec(path.resolve(file));
    write(`${file}: valid ${spec.kind} spec "${spec.name}"\n`);
    return EXIT.ok;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return EXIT.failed;
  }
}

export async function clientCommand(cmd: string, argv: string[], env: Env): Promise<number> {
  const { values, positionals } = args(cmd, argv, {
    ...DAEMON_OPTIONS,
    reason: { type: "string" },
    state: { type: "string" },
    json: { type: "boolean", default: false },
    follow: { type: "boolean", default: false },
    v2: { type: "boolean", default: false },
  });
  const allowed: Record<string, string[]> = { health: [], drain: [], status: [], events: ["json", "follow", "v2"], cancel: ["reason"], list: ["state", "json"] };
  for (const k of Object.keys(values)) {
    if (k in DAEMON_OPTIONS || allowed[cmd].includes(k) || (values as Record<string, unknown>)[k] === false) continue;
    throw new UsageError(`voidbox ${cmd} does not take --${k}`, cmd);
  }
  const state = values.state;
  if (state !== undefined && state !== "active" && state !== "terminal") throw new UsageError(`--state must be active or terminal (got ${JSON.stringify(state)})`, cmd);
  const id = () => positional(cmd, positionals, "RUN_ID");
  const noId = cmd === "health" || cmd === "list" || cmd === "drain";
  if (noId && positionals.length) throw new UsageError(`voidbox ${cmd} takes no arguments`, cmd);
  const runId = noId ? "" : id();
  const client = clientFrom(values, env);
  try {
    if (cmd === "health") json(await client.health());
    else if (cmd === "drain") json(await client.drain());
    else if (cmd === "status") json(await client.getRun(runId));
    else if (cmd === "cancel") json(await client.cancelRun(runId, values.reason));
    else if (cmd === "list") {
      const runs = await client.listRuns({ state });
      write(values.json ? JSON.stringify(runs, null, 2) + "\n" : runs.length ? runTable(runs) : "no runs\n");
    } else if (cmd === "events") {
      const print = (e: Parameters<typeof formatEvent>[0]) => write((values.json ? JSON.stringify(e) : formatEvent(e)) + "\n");
      if (values.follow) for await (const e of client.follow(runId, { v2: values.v2 })) print(e);
      else for (const e of await client.listEvents(runId, { apiVersion: values.v2 ? "v2" : undefined })) print(e);
    }
    return EXIT.ok;
  } finally {
    await client.close();
  }
}
