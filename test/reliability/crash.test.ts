// Fault injection (CONTRACT.md section 13): kill -9 the daemon while a burst of
// requests is in flight, restart it on the same state dir, and check that nothing it
// acknowledged was lost or changed, that runs active at the crash failed with
// terminal_reason "daemon_restarted", and that the files on disk are sound.
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  childEnv,
  isApiError,
  killHard,
  request,
  startDaemon,
  stopDaemon,
  tempDir,
  TERMINAL,
  writeSpec,
  type DaemonProc,
  type RunEventLike,
  type RunStateLike,
} from "./harness.js";

const ITERATIONS = 5;
const WORKERS = 16;

/** mulberry32: a seeded PRNG so a failing run can be replayed (seed is printed). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Acked {
  kind: "short" | "long";
}
interface AckedTerminal {
  status: string;
  terminal_event_id: string | null;
  via: string;
}

const running: DaemonProc[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const d of running) await killHard(d).catch(() => undefined);
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function readEventsFile(file: string): { events: RunEventLike[]; badLines: number[]; torn: boolean } {
  let text = "";
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return { events: [], badLines: [], torn: false };
  }
  const torn = text.length > 0 && !text.endsWith("\n");
  const events: RunEventLike[] = [];
  const badLines: number[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line) return;
    try {
      events.push(JSON.parse(line) as RunEventLike);
    } catch {
      badLines.push(i + 1);
    }
  });
  return { events, badLines, torn };
}

describe("crash recovery (kill -9 under load)", () => {
  it(
    `keeps every acknowledged reply across ${ITERATIONS} kill -9 / restart cycles`,
    async () => {
      const seed = Number(process.env.VOIDBOX_CRASH_SEED ?? Date.now() % 2 ** 31);
      const rnd = prng(seed);
      const home = tempDir("vbx-crash-");
      dirs.push(home);
      const stateDir = path.join(home, "state");
      const specs = path.join(home, "specs");
      fs.mkdirSync(specs);
      const shortSpec = writeSpec(specs, "short.yaml", [
        { name: "wait", program: "sleep", args: ["0.2"] },
        { name: "say", program: "echo", args: ["done"], depends_on: ["wait"] },
      ]);
      const longSpec = writeSpec(specs, "long.yaml", [{ name: "wait", program: "sleep", args: ["300"] }]);
      const env = childEnv(home);
      const start = async () => {
        const d = await startDaemon({ args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", stateDir, "--no-auth", "--accel", "tcg"], env });
        running.push(d);
        return d;
      };

      const acked = new Map<string, Acked>();
      const ackedTerminal = new Map<string, AckedTerminal>();
      const problems: string[] = [];
      const inflightAtKill: number[] = [];
      const ackedPerIteration: number[] = [];
      let lostTotal = 0;
      let sentTotal = 0;
      let counter = 0;

      /** Records a terminal state acknowledged by the daemon; a second sighting must agree. */
      const noteTerminal = (id: string, status: string, tid: string | null, via: string) => {
        const prev = ackedTerminal.get(id);
        if (prev && (prev.status !== status || prev.terminal_event_id !== tid))
          problems.push(`run ${id}: terminal state changed ${prev.status}/${prev.terminal_event_id} (${prev.via}) → ${status}/${tid} (${via})`);
        if (!prev) ackedTerminal.set(id, { status, terminal_event_id: tid, via });
      };

      let d = await start();
      for (let iter = 0; iter < ITERATIONS; iter++) {
        const url = d.urls[0];
        const ackedBefore = acked.size;
        let inflight = 0;
        let stop = false;
        const pickAcked = (): string | undefined => {
          const ids = [...acked.keys()];
          return ids.length ? ids[Math.floor(rnd() * ids.length)] : undefined;
        };

        const op = async (): Promise<void> => {
          const r = rnd();
          if (r < 0.55) {
            const kind: Acked["kind"] = r < 0.3 ? "short" : "long";
            const id = `i${iter}-${kind[0]}${counter++}`;
            const reply = await request(url, "/v1/runs", { body: { file: kind === "short" ? shortSpec : longSpec, run_id: id } });
            if (reply.status === 200) {
              const b = reply.json as { run_id: string; state: string };
              if (b.run_id !== id) problems.push(`create ${id} answered run_id ${b.run_id}`);
              acked.set(id, { kind });
            } else problems.push(`create ${id}: unexpected ${reply.status} ${reply.text}`);
          } else if (r < 0.72) {
            const id = pickAcked();
            if (!id) return;
            const reply = await request(url, `/v1/runs/${id}/cancel`, { method: "POST", body: { reason: "crash test" } });
            if (reply.status === 200) {
              const b = reply.json as { state: string; terminal_event_id: string | null };
              if (!TERMINAL.has(b.state) || !b.terminal_event_id) problems.push(`cancel ${id}: non-terminal reply ${reply.text}`);
              else noteTerminal(id, b.state, b.terminal_event_id, "cancel reply");
            } else problems.push(`cancel ${id}: unexpected ${reply.status} ${reply.text}`);
          } else if (r < 0.95) {
            const id = pickAcked();
            if (!id) return;
            const reply = await request(url, `/v1/runs/${id}`);
            if (reply.status === 200) {
              const s = reply.json as RunStateLike;
              if (TERMINAL.has(s.status)) noteTerminal(id, s.status, s.terminal_event_id, "GET run");
            } else problems.push(`GET ${id}: unexpected ${reply.status} ${reply.text}`);
          } else {
            // Idempotent re-create of a known id: active → 200 same id, terminal → 409.
            const id = pickAcked();
            if (!id) return;
            const reply = await request(url, "/v1/runs", { body: { file: acked.get(id)!.kind === "short" ? shortSpec : longSpec, run_id: id } });
            if (reply.status === 409) {
              if ((reply.json as { code?: string }).code !== "ALREADY_TERMINAL") problems.push(`re-create ${id}: 409 ${reply.text}`);
            } else if (reply.status === 200) {
              if ((reply.json as { run_id?: string }).run_id !== id) problems.push(`re-create ${id}: ${reply.text}`);
            } else problems.push(`re-create ${id}: unexpected ${reply.status} ${reply.text}`);
          }
        };

        const worker = async () => {
          while (!stop) {
            inflight++;
            sentTotal++;
            try {
              await op();
            } catch {
              // connection refused/reset by the kill: not acknowledged, nothing to check
            } finally {
              inflight--;
            }
          }
        };

        // Burst for a random short time, then kill -9 with requests in flight.
        const workers = Array.from({ length: WORKERS }, worker);
        const burstMs = 300 + Math.floor(rnd() * 1000);
        await new Promise((r) => setTimeout(r, burstMs)); // the random kill point, not a synchronisation
        stop = true;
        const inflightNow = inflight;
        await killHard(d);
        inflightAtKill.push(inflightNow);
        await Promise.all(workers);

        // What the dead daemon left on disk.
        const onDisk = new Map<string, { status: string; terminal_event_id: string | null }>();
        for (const name of fs.readdirSync(path.join(stateDir, "runs"))) {
          const runJson = path.join(stateDir, "runs", name, "run.json");
          if (!fs.existsSync(runJson)) {
            // An acknowledged create always has its run.json: only unacknowledged creates may lack one.
            if (acked.has(name)) problems.push(`iteration ${iter}: acknowledged run ${name} has no run.json after the crash`);
            continue;
          }
          try {
            const f = JSON.parse(fs.readFileSync(runJson, "utf8")) as { status: string; terminal_event_id: string | null };
            onDisk.set(name, { status: f.status, terminal_event_id: f.terminal_event_id });
          } catch (e) {
            problems.push(`iteration ${iter}: ${runJson} does not parse after the crash: ${(e as Error).message}`);
          }
        }

        // Restart on the same state dir and check everything acknowledged so far.
        d = await start();
        const url2 = d.urls[0];
        const health = await request(url2, "/v1/health");
        expect(health.status).toBe(200);
        const quarantined = (health.json as { quarantined_files?: string[] }).quarantined_files;
        if (!Array.isArray(quarantined) || quarantined.length) {
          const why = (quarantined ?? []).map((q) => {
            const reason = path.join(stateDir, `${q}.reason`);
            const id = path.basename(q).replace(/\.\d+$/, "");
            return `${q} (${acked.has(id) ? "ACKNOWLEDGED" : "never acknowledged"} run; reason: ${fs.existsSync(reason) ? fs.readFileSync(reason, "utf8").trim() : "?"})`;
          });
          problems.push(`iteration ${iter}: quarantined_files is not empty: ${why.join("; ")}`);
        }

        const list = await request(url2, "/v1/runs");
        expect(list.status).toBe(200);
        const runs = new Map((list.json as { runs: RunStateLike[] }).runs.map((r) => [r.id, r]));

        let lost = 0;
        for (const id of acked.keys()) {
          if (!runs.has(id)) {
            lost++;
            problems.push(`iteration ${iter}: acknowledged run ${id} is missing after restart`);
          }
        }
        for (const [id, t] of ackedTerminal) {
          const r = runs.get(id);
          if (r && (r.status !== t.status || r.terminal_event_id !== t.terminal_event_id)) {
            lost++;
            problems.push(`iteration ${iter}: run ${id} acknowledged ${t.status}/${t.terminal_event_id} (${t.via}) but is ${r.status}/${r.terminal_event_id} after restart`);
          }
        }
        lostTotal += lost;

        for (const r of runs.values()) {
          // Nothing was created since the restart: every run must be terminal now.
          if (!TERMINAL.has(r.status)) problems.push(`iteration ${iter}: run ${r.id} is ${r.status} after restart`);
          const disk = onDisk.get(r.id);
          if (disk && !TERMINAL.has(disk.status)) {
            // Active when the daemon died → failed / daemon_restarted with a final run.failed.
            const last = r.events[r.events.length - 1];
            if (r.status !== "failed" || r.terminal_reason !== "daemon_restarted")
              problems.push(`iteration ${iter}: run ${r.id} was ${disk.status} at the crash but is ${r.status}/${r.terminal_reason}`);
            else if (!last || last.event_type !== "run.failed" || last.event_id !== r.terminal_event_id)
              problems.push(`iteration ${iter}: run ${r.id} failed on restart but its last event is ${last?.event_type}/${last?.event_id} (terminal_event_id ${r.terminal_event_id})`);
          } else if (disk && (disk.status !== r.status || disk.terminal_event_id !== r.terminal_event_id)) {
            problems.push(`iteration ${iter}: run ${r.id} was terminal on disk (${disk.status}/${disk.terminal_event_id}) but is ${r.status}/${r.terminal_event_id}`);
          }
          if (TERMINAL.has(r.status)) {
            const terminalEvent = r.events.find((e) => e.event_id === r.terminal_event_id);
            if (!terminalEvent) problems.push(`iteration ${iter}: run ${r.id}: terminal_event_id ${r.terminal_event_id} is not one of its events`);
          }
        }

        // Every events.jsonl parses line by line, seqs are 0..n gapless, and it matches the API.
        for (const name of fs.readdirSync(path.join(stateDir, "runs"))) {
          const dir = path.join(stateDir, "runs", name);
          if (!fs.statSync(dir).isDirectory()) continue;
          const { events, badLines, torn } = readEventsFile(path.join(dir, "events.jsonl"));
          if (badLines.length || torn) problems.push(`iteration ${iter}: ${name}/events.jsonl: bad lines ${badLines.join(",")}${torn ? " (torn last line)" : ""}`);
          const seqs = events.map((e) => e.seq);
          if (!seqs.every((s, i) => s === i)) problems.push(`iteration ${iter}: ${name}/events.jsonl seqs are not 0..n: ${seqs.join(",")}`);
          const api = runs.get(name);
          if (!api) {
            problems.push(`iteration ${iter}: run dir ${name} is on disk but not served`);
            continue;
          }
          if (api.events.map((e) => e.event_id).join() !== events.map((e) => e.event_id).join())
            problems.push(`iteration ${iter}: ${name}: events.jsonl differs from GET /v1/runs/${name} events`);
          const apiSeqs = api.events.map((e) => e.seq);
          if (!apiSeqs.every((s, i) => s === i)) problems.push(`iteration ${iter}: ${name}: served seqs are not 0..n: ${apiSeqs.join(",")}`);
        }

        // A terminal run_id cannot be created again.
        const someTerminal = [...runs.values()].find((r) => TERMINAL.has(r.status));
        if (someTerminal) {
          const again = await request(url2, "/v1/runs", { body: { file: shortSpec, run_id: someTerminal.id } });
          expect(again.status, again.text).toBe(409);
          expect(again.json).toMatchObject({ code: "ALREADY_TERMINAL", retryable: false });
          expect(isApiError(again.json)).toBe(true);
        }

        // Everything now served is acknowledged: later crashes must keep it as it is.
        for (const r of runs.values()) {
          if (!acked.has(r.id)) acked.set(r.id, { kind: r.id.includes("-l") ? "long" : "short" });
          if (TERMINAL.has(r.status)) noteTerminal(r.id, r.status, r.terminal_event_id, `after restart ${iter}`);
        }

        ackedPerIteration.push(acked.size - ackedBefore);
        console.log(
          `CRASH iteration=${iter} burst_ms=${burstMs} inflight_at_kill=${inflightNow} acked_this_iteration=${acked.size - ackedBefore} acked_total=${acked.size} terminal_acked=${ackedTerminal.size} lost=${lost}`,
        );
      }
      await stopDaemon(d);

      console.log(
        `CRASH-SUMMARY iterations=${ITERATIONS} seed=${seed} requests=${sentTotal} inflight=[${inflightAtKill.join(",")}] acked=${acked.size} acked_per_iteration=[${ackedPerIteration.join(",")}] terminal_acked=${ackedTerminal.size} lost=${lostTotal} problems=${problems.length}`,
      );
      for (const p of problems.slice(0, 40)) console.log(`CRASH-PROBLEM ${p}`);
      expect(lostTotal).toBe(0);
      expect(problems).toEqual([]);
      expect(inflightAtKill.every((n) => n > 0)).toBe(true);
    },
    180_000,
  );
});

// Deterministic versions of the on-disk states a kill -9 can leave (the loop above only
// hits them by chance). Writes happen in this order on create: mkdir runs/<id>,
// append run.started + env.provisioned to events.jsonl, then run.json (temp + rename),
// then the reply. A crash anywhere before the rename leaves a run the daemon never
// acknowledged; that is not corruption and must not be reported as such.
describe("states left by a crash at a precise point", () => {
  const ev = (id: string, seq: number, type: string) =>
    JSON.stringify({
      ts_ms: 1_700_000_000_000 + seq,
      level: "info",
      event_type: type,
      message: type,
      run_id: id,
      event_id: `0190c5d2-7c1e-7000-8000-${String(seq).padStart(12, "0")}`,
      seq,
      attempt_id: 1,
      timestamp: new Date(1_700_000_000_000 + seq).toISOString(),
      event_type_v2: type,
      payload: null,
    });
  const runFile = (id: string, status: string) => ({
    id,
    status,
    file: "/nonexistent.yaml",
    report: null,
    error: null,
    attempt_id: 1,
    started_at: new Date(1_700_000_000_000).toISOString(),
    updated_at: new Date(1_700_000_000_000).toISOString(),
    finished_at: null,
    terminal_reason: null,
    terminal_event_id: null,
    exit_code: null,
    policy: null,
    sandbox_mode: null,
    stages: [],
    artifact_publication: null,
  });

  async function boot(stateDir: string) {
    const { createDaemon } = await import("../../src/server.js");
    const d = await createDaemon({ stateDir, auth: null, vm: false });
    const { url } = await d.listen("tcp://127.0.0.1:0");
    return { d, url: url.replace(/\/$/, "") };
  }

  it("a create interrupted before run.json was renamed into place is not reported as a corrupt file", async () => {
    const home = tempDir("vbx-crash-pt-");
    dirs.push(home);
    const stateDir = path.join(home, "state");
    // (a) killed after the two event appends, before the temp file was renamed
    const a = path.join(stateDir, "runs", "interrupted-a");
    fs.mkdirSync(a, { recursive: true });
    fs.writeFileSync(path.join(a, "events.jsonl"), ev("interrupted-a", 0, "run.started") + "\n" + ev("interrupted-a", 1, "env.provisioned") + "\n");
    fs.writeFileSync(path.join(a, `.run.json.4242.7.tmp`), JSON.stringify(runFile("interrupted-a", "running")).slice(0, 40));
    // (b) killed right after mkdir / the first partial append
    const b = path.join(stateDir, "runs", "interrupted-b");
    fs.mkdirSync(b, { recursive: true });
    fs.writeFileSync(path.join(b, "events.jsonl"), ev("interrupted-b", 0, "run.started").slice(0, 30));
    // (c) killed right after mkdir
    fs.mkdirSync(path.join(stateDir, "runs", "interrupted-c"), { recursive: true });

    const { d, url } = await boot(stateDir);
    try {
      const health = await request(url, "/v1/health");
      expect((health.json as { quarantined_files: string[] }).quarantined_files).toEqual([]);
      // Never acknowledged: the run may be dropped, or kept as failed/daemon_restarted — never active.
      for (const id of ["interrupted-a", "interrupted-b", "interrupted-c"]) {
        const r = await request(url, `/v1/runs/${id}`);
        if (r.status === 200) {
          const s = r.json as RunStateLike;
          expect([s.status, s.terminal_reason]).toEqual(["failed", "daemon_restarted"]);
        } else expect(r.status).toBe(404);
      }
    } finally {
      await d.close();
    }
  });

  it("a torn last event line is repaired, an active run fails with daemon_restarted, nothing is quarantined", async () => {
    const home = tempDir("vbx-crash-pt-");
    dirs.push(home);
    const stateDir = path.join(home, "state");
    const dir = path.join(stateDir, "runs", "torn");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(runFile("torn", "running")));
    const lines = [ev("torn", 0, "run.started"), ev("torn", 1, "env.provisioned"), ev("torn", 2, "run.spec.loaded")];
    fs.writeFileSync(path.join(dir, "events.jsonl"), lines.join("\n") + "\n" + ev("torn", 3, "stage.queued").slice(0, 57));
    const { d, url } = await boot(stateDir);
    try {
      const health = await request(url, "/v1/health");
      expect((health.json as { quarantined_files: string[] }).quarantined_files).toEqual([]);
      const s = (await request(url, "/v1/runs/torn")).json as RunStateLike;
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
