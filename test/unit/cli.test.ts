// The built CLI (dist/src/main.js) against an in-process daemon in mock mode on a temp
// Unix socket: exit codes (0 ok, 1 run failed, 2 usage, 3 daemon unreachable, 130
// interrupted), help, version, validate, list, and Ctrl-C on `voidbox run`.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { prettyLine } from "../../src/cli/pretty-log.js";
import type { Daemon } from "../../src/server.js";
import { childEnv, MAIN_JS, REPO_ROOT, startDaemon, tmpDir } from "../helpers/daemon.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

const home = tmpDir("vbx-cli-");
const specDir = tmpDir("vbx-cli-specs-");
const OK = writeSpec(specDir, workflow("ok", [
  { name: "a", run: { program: "echo", args: ["hello"] } },
  { name: "b", depends_on: ["a"], run: { program: "tr", args: ["a-z", "A-Z"] } },
]));
const FAILING = writeSpec(specDir, workflow("failing", [{ name: "boom", run: { program: "false" } }]));
const SLEEPY = writeSpec(specDir, workflow("sleepy", [{ name: "nap", run: { program: "sleep", args: ["300"] } }]));
const INVALID = writeSpec(specDir, { api_version: "v1", kind: "workflow", name: "bad", workflow: { steps: [{ name: "a" }] } });

let daemon: Daemon;
let sock: string;

interface Result { code: number | null; stdout: string; stderr: string }
interface Running { child: ReturnType<typeof spawn>; stdout: () => string; stderr: () => string; done: Promise<Result> }

function start(args: string[], env: NodeJS.ProcessEnv = childEnv(home)): Running {
  if (!fs.existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} does not exist: run \`npm run build\` first`);
  const child = spawn(process.execPath, [MAIN_JS, ...args], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c));
  child.stderr!.on("data", (c: Buffer) => (stderr += c));
  const done = new Promise<Result>((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })));
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

/** Runs the CLI to completion (bounded: a hung CLI is killed and fails the test). */
async function cli(...args: string[]): Promise<Result> {
  const r = start(args);
  const timer = setTimeout(() => r.child.kill("SIGKILL"), 20_000);
  try {
    return await r.done;
  } finally {
    clearTimeout(timer);
  }
}

beforeAll(async () => {
  ({ d: daemon, url: sock } = await startDaemon(path.join(home, "state"), {}, `unix://${path.join(home, "d.sock")}`));
});
afterAll(async () => {
  await daemon?.close();
});

describe("voidbox CLI", () => {
  it("--version prints the package version; COMMAND --help prints that command's usage", async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
    expect(await cli("--version")).toMatchObject({ code: 0, stdout: `voidbox ${pkg.version}\n` });
    const help = await cli("run", "--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: voidbox run FILE/);
    expect(help.stdout).toContain("--cancel-on-interrupt");
  });

  it("exit 0 for a run that succeeds, with its output", async () => {
    const r = await cli("run", "--daemon", sock, OK);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("run.finished");
    expect(r.stdout).toMatch(/output:\n {2}HELLO/);
  });

  it("exit 1 for a run that fails", async () => {
    const r = await cli("run", "--daemon", sock, FAILING);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain("run.failed");
  });

  it("exit 2 for usage errors: unknown command, missing FILE, unknown flag, list --state bad", async () => {
    for (const args of [["frobnicate"], ["run"], ["run", "--daemon", sock, path.join(specDir, "absent.json")], ["status", "--bogus", "x"], ["list", "--daemon", sock, "--state", "bad"], []]) {
      const r = await cli(...args);
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(2);
    }
    const r = await cli("list", "--daemon", sock, "--state", "bad");
    expect(r.stderr).toContain("--state must be active or terminal");
  }, 90_000);

  it("serve: a bad --log-format is a usage error (exit 2); pretty turns pino's JSON lines into readable ones", async () => {
    const r = await cli("serve", "--log-format", "fancy", "--state-dir", path.join(home, "unused"), "--listen", `unix://${path.join(home, "unused.sock")}`);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--log-format must be json or pretty");
    const line = prettyLine(JSON.stringify({ level: 40, time: Date.UTC(2026, 10, 24, 5, 0, 1, 2), pid: 1, hostname: "h", name: "voidbox", msg: "slow client", run_id: "r 1", n: 3 }));
    expect(line).toBe('05:00:01.002 WARN  slow client run_id="r 1" n=3');
    expect(prettyLine("not json")).toBe("not json");
  });

  it("exit 3 when no daemon answers, with how to start one", async () => {
    const r = await cli("run", "--daemon", `unix://${path.join(home, "absent.sock")}`, OK);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("cannot reach the voidbox daemon");
    expect(r.stderr).toContain("voidbox serve");
  });

  it("validate: 0 for a valid spec, 1 naming the field for an invalid one; no run is created", async () => {
    const before = daemon.service.list(undefined).length;
    expect(await cli("validate", OK)).toMatchObject({ code: 0 });
    const bad = await cli("validate", INVALID);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("workflow/steps/0/run: is required");
    expect(daemon.service.list(undefined).length).toBe(before);
  });

  it("list prints a table; --state filters", async () => {
    await cli("run", "--daemon", sock, OK);
    const all = await cli("list", "--daemon", sock);
    expect(all.code).toBe(0);
    expect(all.stdout.split("\n")[0]).toMatch(/^RUN ID\s+STATUS\s+NAME/);
    expect(all.stdout).toMatch(/succeeded\s+ok\s+workflow/);
    const active = await cli("list", "--daemon", sock, "--state", "active");
    expect(active.stdout).not.toMatch(/succeeded/);
  });

  for (const cancel of [false, true]) {
    it(`Ctrl-C on run ${cancel ? "with --cancel-on-interrupt cancels the run" : "leaves the run going and says how to cancel it"}`, async () => {
      const r = start(["run", "--daemon", sock, ...(cancel ? ["--cancel-on-interrupt"] : []), SLEEPY]);
      try {
        await waitFor(() => r.stdout().includes("stage.started"), "the stage to start", 15_000);
        const id = /run (\S+) started/.exec(r.stdout())![1];
        r.child.kill("SIGINT");
        const res = await r.done;
        expect(res.code).toBe(130);
        if (cancel) {
          expect(res.stderr).toContain(`run ${id} cancelled`);
          expect(daemon.service.get(id)?.status).toBe("cancelled");
        } else {
          expect(res.stderr).toContain(`voidbox cancel ${id}`);
          expect(daemon.service.get(id)?.status).toBe("running");
          daemon.service.cancel(id, "test cleanup");
        }
      } finally {
        r.child.kill("SIGKILL");
      }
    });
  }
});
