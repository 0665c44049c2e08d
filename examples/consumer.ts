// A consumer of the voidbox daemon through the typed SDK (@voidbox/client): start a run
// from an inline spec (the daemon needs no access to this machine's files), follow its
// events live, print its output. Type-checked in CI (npm run typecheck).
//
//   npx tsx examples/consumer.ts [DAEMON_URL] [SPEC_FILE] [INPUT]
//
// DAEMON_URL is http://HOST:PORT (token from $VOIDBOX_DAEMON_TOKEN) or unix:///PATH.
import fs from "node:fs";
import { createClient, DaemonUnreachableError, VoidboxError, type VoidboxEvent } from "@voidbox/client";

function describe(e: VoidboxEvent): string {
  // event_type narrows the union: each case sees its own payload type.
  switch (e.event_type) {
    case "stage.started":
      return `stage ${e.stage_name} started (attempt ${e.payload.stage_attempt})`;
    case "stage.completed":
      return `stage ${e.stage_name} succeeded in ${e.payload.duration_ms} ms`;
    case "stage.failed":
      return `stage ${e.stage_name} failed: ${e.payload.error}`;
    case "microvm.spawned":
      return `micro-VM booted in ${e.payload.boot_ms} ms (${e.payload.accelerator})`;
    case "log.chunk":
      return `| ${e.payload.data}`;
    case "run.finished":
      return `run succeeded (exit code ${e.payload.exit_code})`;
    case "run.failed":
      return `run failed: ${e.payload?.error ?? e.message}`;
    default:
      // Event types this client does not know (a newer daemon) still arrive, untyped.
      return `${e.event_type}: ${e.message}`;
  }
}

async function main(): Promise<number> {
  const url = process.argv[2] ?? process.env.VOIDBOX_DAEMON_URL ?? "http://127.0.0.1:43100";
  const spec = fs.readFileSync(process.argv[3] ?? "examples/hello.yaml", "utf8");
  const input = process.argv[4];
  const client = createClient({ url, token: process.env.VOIDBOX_DAEMON_TOKEN ?? null });
  try {
    const run = await client.createRun({ spec, input });
    console.log(`run ${run.run_id} is ${run.state}`);
    for await (const e of client.follow(run.run_id)) console.log(describe(e));
    const state = await client.getRun(run.run_id);
    process.stdout.write(state.report?.output ?? "");
    return state.status === "succeeded" ? 0 : 1;
  } catch (e) {
    if (e instanceof DaemonUnreachableError) console.error(`${e.message}\nstart one with: voidbox serve`);
    else if (e instanceof VoidboxError) console.error(`the daemon refused: ${e.code}: ${e.body?.message ?? e.message}`);
    else throw e;
    return e instanceof DaemonUnreachableError ? 3 : 1;
  } finally {
    await client.close();
  }
}

process.exitCode = await main();
