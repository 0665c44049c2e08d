// Fault injection: kill -9 the daemon while a burst of requests is in flight, restart
// it on the same state dir, and check that nothing it acknowledged was lost or changed,
// that runs active at the crash failed with terminal_reason "daemon_restarted" (or, when
// their log already held a terminal event, adopted it), and that the files on disk are
// sound. The cycle driver is shared with bench/crash-cycles.ts.
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCrashCycles } from "./crash-cycles.js";
import { eventLine, readEventsFile, runFile } from "../helpers/statefiles.js";
import { startDaemon, tmpDir } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";

const CYCLES = 5;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

// The cycles run once; each case below checks one of the things they must keep.
describe(`crash recovery (kill -9 under load, ${CYCLES} kill -9 / restart cycles)`, () => {
  let r: Awaited<ReturnType<typeof runCrashCycles>>;
  beforeAll(async () => {
    const seed = Number(process.env.VOIDBOX_CRASH_SEED ?? Date.now() % 2 ** 31);
    r = await runCrashCycles({ cycles: CYCLES, seed, log: (l) => console.log(l) });
    console.log(
      `CRASH-SUMMARY cycles=${CYCLES} seed=${seed} requests=${r.requests} inflight=[${r.inflightAtKill.join(",")}] acked=${r.ackedRuns} terminal_acked=${r.ackedTerminal} runs_lost=${r.runsLost} terminal_lost=${r.terminalLost} flips=${r.outcomeFlips} adopted=${r.adopted} problems=${r.problems.length}`,
    );
    for (const p of r.problems.slice(0, 40)) console.log(`CRASH-PROBLEM ${p}`);
  }, 180_000);

  it("every cycle killed the daemon with requests in flight", () => {
    expect(r.inflightAtKill.every((n) => n > 0)).toBe(true);
  });

  it("no acknowledged run is lost, no acknowledged terminal state is lost or changed, no file is quarantined", () => {
    expect([r.runsLost, r.terminalLost, r.outcomeFlips, r.quarantined]).toEqual([0, 0, 0, 0]);
  });

  it("every reply and every run read back after a restart is as the contract says", () => {
    expect(r.problems).toEqual([]);
  });
});

// Deterministic versions of the on-disk states a kill -9 can leave (the loop above only
// hits them by chance). Writes happen in this order on create: mkdir runs/<id>,
// append run.started + env.provisioned to events.jsonl, then run.json (temp + rename),
// then the reply. A crash anywhere before the rename leaves a run the daemon never
// acknowledged; that is not corruption and must not be reported as such.
describe("states left by a crash at a precise point", () => {
  const ev = (id: string, seq: number, type: string) => eventLine(id, seq, type);

  async function boot(stateDir: string) {
    const { d, url } = await startDaemon(stateDir, { auth: null });
    return { d, url: url.replace(/\/$/, "") };
  }

  it("a create interrupted before run.json was renamed into place is not reported as a corrupt file", async () => {
    const home = tmpDir("vbx-crash-pt-");
    dirs.push(home);
    const stateDir = path.join(home, "state");
    // (a) killed after the two event appends, before the temp file was renamed
    const a = path.join(stateDir, "runs", "interrupted-a");
    fs.mkdirSync(a, { recursive: true });
    fs.writeFileSync(path.join(a, "events.jsonl"), ev("interrupted-a", 0, "run.started") + "\n" + ev("interrupted-a", 1, "env.provisioned") + "\n");
    fs.writeFileSync(path.join(a, `.run.json.4242.7.tmp`), JSON.stringify(runFile("interrupted-a")).slice(0, 40));
    // (b) killed right after mkdir / the first partial append
    const b = path.join(stateDir, "runs", "interrupted-b");
    fs.mkdirSync(b, { recursive: true });
    fs.writeFileSync(path.join(b, "events.jsonl"), ev("interrupted-b", 0, "run.started").slice(0, 30));
    // (c) killed right after mkdir
    fs.mkdirSync(path.join(stateDir, "runs", "interrupted-c"), { recursive: true });

    const { d, url } = await boot(stateDir);
    try {
      expect((await sdk(url).health()).quarantined_files).toEqual([]);
      // Never acknowledged: the run may be dropped, or kept as failed/daemon_restarted — never active.
      for (const id of ["interrupted-a", "interrupted-b", "interrupted-c"]) {
        const r = await sdk(url).api.GET("/v1/runs/{run_id}", { params: { path: { run_id: id } } });
        if (r.data) expect([r.data.status, r.data.terminal_reason]).toEqual(["failed", "daemon_restarted"]);
        else expect(r.response.status).toBe(404);
      }
    } finally {
      await d.close();
    }
  });

  it("a torn last event line is repaired, an active run fails with daemon_restarted, nothing is quarantined", async () => {
    const home = tmpDir("vbx-crash-pt-");
    dirs.push(home);
    const stateDir = path.join(home, "state");
    const dir = path.join(stateDir, "runs", "torn");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(runFile("torn")));
    const lines = [ev("torn", 0, "run.started"), ev("torn", 1, "env.provisioned"), ev("torn", 2, "run.spec.loaded")];
    fs.writeFileSync(path.join(dir, "events.jsonl"), lines.join("\n") + "\n" + ev("torn", 3, "stage.queued").slice(0, 57));
    const { d, url } = await boot(stateDir);
    try {
      expect((await sdk(url).health()).quarantined_files).toEqual([]);
      const s = await sdk(url).getRun("torn");
      expect([s.status, s.terminal_reason]).toEqual(["failed", "daemon_restarted"]);
      expect(s.events.map((e) => e.seq)).toEqual([0, 1, 2, 3]);
      expect(s.events[3].event_type).toBe("run.failed");
      expect(s.terminal_event_id).toBe(s.events[3].event_id);
      const onDisk = readEventsFile(path.join(dir, "events.jsonl"));
      expect(onDisk.badLines).toEqual([]);
      expect(onDisk.torn).toBe(false);
      expect(onDisk.events.map((e) => e.seq)).toEqual([0, 1, 2, 3]);
    } finally {
      await d.close();
    }
  });
});
