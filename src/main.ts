#!/usr/bin/env node
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EXIT, UsageError } from "./cli/errors.js";
import { ConfigError } from "./config.js";
import { COMMAND_HELP, USAGE } from "./cli/usage.js";

/** The package's version: package.json above src/ (from source) or dist/src/ (built). */
function version(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const file = path.join(dir, "package.json");
    if (fs.existsSync(file)) return (JSON.parse(fs.readFileSync(file, "utf8")) as { version: string }).version;
    if (path.dirname(dir) === dir) return "unknown";
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    process.stderr.write(USAGE);
    return EXIT.usage;
  }
  if (cmd === "--version" || cmd === "-V" || cmd === "version") {
    process.stdout.write(`voidbox ${version()}\n`);
    return EXIT.ok;
  }
  if (cmd === "help" || cmd === "--help" || cmd === "-h") {
    const topic = rest[0];
    process.stdout.write(topic && COMMAND_HELP[topic] ? COMMAND_HELP[topic] + "\n" : USAGE);
    return EXIT.ok;
  }
  if (!(cmd in COMMAND_HELP)) throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(COMMAND_HELP[cmd] + "\n");
    return EXIT.ok;
  }
  // Loaded on demand: a client command need not load the daemon, nor `--help` anything.
  if (cmd === "serve") {
    try {
      return await (await import("./cli/serve.js")).serve(rest, process.env); // -1: keeps running
    } catch (e) {
      if ((e as NodeJS.ErrnoException)?.code?.startsWith?.("ERR_PARSE_ARGS")) throw new UsageError((e as Error).message, "serve");
      throw e;
    }
  }
  if (cmd === "image") return (await import("./cli/image.js")).imageCommand(rest, process.env);
  const commands = await import("./cli/commands.js");
  if (cmd === "run") return commands.runCommand(rest, process.env);
  if (cmd === "validate") return commands.validateCommand(rest);
  return commands.clientCommand(cmd, rest, process.env);
}

async function fail(e: unknown): Promise<number> {
  // Loaded here, not at the top: the SDK pulls in undici (~150 ms), which `serve` never needs.
  const { DaemonUnreachableError, VoidboxError } = await import("@voidbox/client");
  // Bad flags, files or variables the operator gave are usage errors too.
  if (e instanceof ConfigError) {
    process.stderr.write(`voidbox: ${e.message}\n`);
    return EXIT.usage;
  }
  if (e instanceof UsageError) {
    process.stderr.write(`voidbox: ${e.message}\n${e.command ? `see: voidbox ${e.command} --help` : "see: voidbox --help"}\n`);
    return EXIT.usage;
  }
  if (e instanceof DaemonUnreachableError) {
    process.stderr.write(
      `voidbox: ${e.message}\n` +
        `is the daemon running? start one with:  voidbox serve${e.target.startsWith("unix://") ? "" : " --listen tcp://HOST:PORT"}\n` +
        `(or point at another with --daemon URL or VOIDBOX_DAEMON_URL)\n`,
    );
    return EXIT.unreachable;
  }
  if (e instanceof VoidboxError) {
    process.stderr.write(`voidbox: the daemon refused: ${e.message}\n`);
    return EXIT.failed;
  }
  process.stderr.write(`voidbox: ${e instanceof Error ? e.message : String(e)}\n`);
  return EXIT.failed;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  async (e: unknown) => {
    process.exitCode = await fail(e);
  },
);
