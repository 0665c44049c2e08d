// kill -9 cycles against the built daemon, shared by test/reliability/crash.test.ts (a few
// cycles, asserted) and bench/crash-cycles.ts (many, measured): workers create, cancel,
// re-create and read runs and append session messages; at a random point the daemon is
// killed with requests in flight, restarted on the same state dir, and everything it had
// acknowledged is checked against what it serves and what is on disk.
import fs from "node:fs";
import path from "node:path";
import { prng } from "../helpers/prng.js";
import { readEventsFile } from "../helpers/statefiles.js";
import { childEnv, killHard, startDaemonProcess, stopDaemon, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { TERMINAL } from "../helpers/runs.js";
import { writeSpec, programWorkflow } from "../helpers/specs.js";

const TERMINAL_EVENTS: Record<string, string> = { "run.finished": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled" };

export interface CrashCycleOptions {
  cycles: number;
  seed: number;
  workers?: number;
  /** Also append session messages (and check none acknowledged is lost). */
  sessions?: boolean;
  /** Burst length before each kill: minMs + random(spreadMs). */
  burst?: { minMs: number; spreadMs: number };
  log?: (line: string) => void;
}

export interface CrashCycleReport {
  seed: number;
  cycles: number;
  requests: number;
  inflightAtKill: number[];
  ackedRuns: number;
  ackedTerminal: number;
  ackedMessages: number;
  /** Acknowledged runs missing after a restart. */
  runsLost: number;
  /** Acknowledged terminal states missing or different after a restart. */
  terminalLost: number;
  /** Acknowledged session messages missing after a restart. */
  messagesLost: number;
  /** Runs whose log already held a terminal event at the crash but ended differently after the restart. */
  outcomeFlips: number;
  /** Runs whose log held a terminal event while run.json still said active (adopted on restart). */
  adopted: number;
  quarantined: number;
  problems: string[];
}

interface Acked {
  kind: "short" | "long";
}

export async function runCrashCycles(o: CrashCycleOptions): Promise<CrashCycleReport> {
  const log = o.log ?? (() => undefined);
  const rnd = prng(o.seed);
  const workers = o.workers ?? 16;
  const burst = o.burst ?? { minMs: 300, spreadMs: 1000 };
  const home = tmpDir("vbx-crash-");
  const stateDir = path.join(home, "state");
  const specs = path.join(home, "specs");
  fs.mkdirSync(specs);
  const shortSpec = writeSpec(specs, programWorkflow("short.yaml", [
    { name: "wait", program: "sleep", args: ["0.2"] },
    { name: "say", program: "echo", args: ["done"], depends_on: ["wait"] },
  ]), "short.yaml");
  const longSpec = writeSpec(specs, programWorkflow("long.yaml", [{ name: "wait", program: "sleep", args: ["300"] }]), "long.yaml");
  const env = childEnv(home);
  const start = () => startDaemonProcess({ args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", stateDir, "--no-auth", "--accel", "tcg", "--min-free-space", "0"], env });

  const r: CrashCycleReport = {
    seed: o.seed,
    cycles: o.cycles,
    requests: 0,
    inflightAtKill: [],
    ackedRuns: 0,
    ackedTerminal: 0,
    ackedMessages: 0,
    runsLost: 0,
    terminalLost: 0,
    messagesLost: 0,
    outcomeFlips: 0,
    adopted: 0,
    quarantined: 0,
    problems: [],
  };
  const problems = r.problems;
  const acked = new Map<string, Acked>();
  const ackedTerminal = new Map<string, { status: string; terminal_event_id: string | null; via: string }>();
  /** Per session: contents of acknowledged messages, in order. */
  const ackedMessages = new Map<string, string[]>();
  let counter = 0;

  const noteTerminal = (id: string, status: string, tid: string | null, via: string) => {
    const prev = ackedTerminal.get(id);
    if (prev && (prev.status !== status || prev.terminal_event_id !== tid)) {
      r.terminalLost++;
      problems.push(`run ${id}: terminal state changed ${prev.status}/${prev.terminal_event_id} (${prev.via}) → ${status}/${tid} (${via})`);
    }
    if (!prev) ackedTerminal.set(id, { status, terminal_event_id: tid, via });
  };

  let d: DaemonProc = await start();
  try {
    for (let iter = 0; iter < o.cycles; iter++) {
      const url = d.urls[0];
      let inflight = 0;
      let stop = false;
      const pickAcked = (): string | undefined => {
        const ids = [...acked.keys()];
        return ids.length ? ids[Math.floor(rnd() * ids.length)] : undefined;
      };

      const op = async (): Promise<void> => {
        const x = rnd();
        if (o.sessions && x < 0.15) {
          const sid = `s${Math.floor(rnd() * 4)}`;
          const content = `m${counter++}`;
          const reply = await sdk(url).api.POST("/v1/sessions/{session_id}/messages", { params: { path: { session_id: sid } }, body: { role: "user", content } });
          if (reply.response.status === 200) {
            const list = ackedMessages.get(sid) ?? [];
            list.push(content);
            ackedMessages.set(sid, list);
          } else problems.push(`session ${sid}: unexpected ${reply.response.status} ${JSON.stringify(reply.error)}`);
          return;
        }
        const y = o.sessions ? (x - 0.15) / 0.85 : x;
        if (y < 0.55) {
          const kind: Acked["kind"] = y < 0.3 ? "short" : "long";
          const id = `i${iter}-${kind[0]}${counter++}`;
          const reply = await sdk(url).api.POST("/v1/runs", { body: { file: kind === "short" ? shortSpec : longSpec, run_id: id } });
          if (reply.data) {
            if (reply.data.run_id !== id) problems.push(`create ${id} answered run_id ${reply.data.run_id}`);
            acked.set(id, { kind });
          } else problems.push(`create ${id}: unexpected ${reply.response.status} ${JSON.stringify(reply.error)}`);
        } else if (y < 0.72) {
          const id = pickAcked();
          if (!id) return;
          const reply = await sdk(url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } }, body: { reason: "crash test" } });
          const b = reply.data;
          if (b) {
            if (!TERMINAL.has(b.state) || !b.terminal_event_id) problems.push(`cancel ${id}: non-terminal reply ${JSON.stringify(b)}`);
            else noteTerminal(id, b.state, b.terminal_event_id, "cancel reply");
          } else problems.push(`cancel ${id}: unexpected ${reply.response.status} ${JSON.stringify(reply.error)}`);
        } else if (y < 0.95) {
          const id = pickAcked();
          if (!id) return;
          const reply = await sdk(url).api.GET("/v1/runs/{run_id}", { params: { path: { run_id: id } } });
          const s = reply.data;
          if (s) {
            if (TERMINAL.has(s.status)) noteTerminal(id, s.status, s.terminal_event_id, "GET run");
          } else problems.push(`GET ${id}: unexpected ${reply.response.status} ${JSON.stringify(reply.error)}`);
        } else {
          // Idempotent re-create of a known id: active → 200 same id, terminal → 409.
          const id = pickAcked();
          if (!id) return;
          const reply = await sdk(url).api.POST("/v1/runs", { body: { file: acked.get(id)!.kind === "short" ? shortSpec : longSpec, run_id: id } });
          const status = reply.response.status;
          if (status === 409) {
            if (reply.error?.code !== "ALREADY_TERMINAL") problems.push(`re-create ${id}: 409 ${JSON.stringify(reply.error)}`);
          } else if (status === 200) {
            if (reply.data?.run_id !== id) problems.push(`re-create ${id}: ${JSON.stringify(reply.data)}`);
          } else problems.push(`re-create ${id}: unexpected ${status} ${JSON.stringify(reply.error)}`);
        }
      };

      const worker = async () => {
        while (!stop) {
          inflight++;
          r.requests++;
          try {
            await op();
          } catch {
            // connection refused/reset by the kill: not acknowledged, nothing to check
          } finally {
            inflight--;
          }
        }
      };

      // Burst for a random time, then kill -9 with requests in flight.
      const running = Array.from({ length: workers }, worker);
      const burstMs = burst.minMs + Math.floor(rnd() * burst.spreadMs);
      await new Promise((res) => setTimeout(res, burstMs)); // the random kill point, not a synchronisation
      stop = true;
      const inflightNow = inflight;
      await killHard(d);
      r.inflightAtKill.push(inflightNow);
      await Promise.all(running);

      // What the dead daemon left on disk: run.json, and the outcome its log already holds.
      const onDisk = new Map<string, { status: string; terminal_event_id: string | null; logged?: { status: string; event_id: string } }>();
      for (const name of fs.readdirSync(path.join(stateDir, "runs"))) {
        const runJson = path.join(stateDir, "runs", name, "run.json");
        if (!fs.existsSync(runJson)) {
          if (acked.has(name)) problems.push(`cycle ${iter}: acknowledged run ${name} has no run.json after the crash`);
          continue;
        }
        try {
          const f = JSON.parse(fs.readFileSync(runJson, "utf8")) as { status: string; terminal_event_id: string | null };
          const events = readEventsFile(path.join(stateDir, "runs", name, "events.jsonl")).events;
          const last = [...events].reverse().find((e) => TERMINAL_EVENTS[e.event_type]);
          onDisk.set(name, { ...f, logged: last && { status: TERMINAL_EVENTS[last.event_type], event_id: last.event_id } });
        } catch (e) {
          problems.push(`cycle ${iter}: ${runJson} does not parse after the crash: ${(e as Error).message}`);
        }
      }

      d = await start();
      const url2 = d.urls[0];
      const health = await sdk(url2).api.GET("/v1/health");
      if (health.response.status !== 200) problems.push(`cycle ${iter}: health answered ${health.response.status}`);
      const quarantined = health.data?.quarantined_files ?? [];
      r.quarantined += quarantined.length;
      for (const q of quarantined) {
        const reason = path.join(stateDir, `${q}.reason`);
        problems.push(`cycle ${iter}: quarantined ${q} (reason: ${fs.existsSync(reason) ? fs.readFileSync(reason, "utf8").trim() : "?"})`);
      }

      const runs = new Map((await sdk(url2).listRuns()).map((x) => [x.id, x]));
      let lost = 0;
      for (const id of acked.keys()) {
        if (!runs.has(id)) {
          lost++;
          problems.push(`cycle ${iter}: acknowledged run ${id} is missing after restart`);
        }
      }
      r.runsLost += lost;
      for (const [id, t] of ackedTerminal) {
        const x = runs.get(id);
        if (x && (x.status !== t.status || x.terminal_event_id !== t.terminal_event_id)) {
          r.terminalLost++;
          problems.push(`cycle ${iter}: run ${id} acknowledged ${t.status}/${t.terminal_event_id} (${t.via}) but is ${x.status}/${x.terminal_event_id} after restart`);
        }
      }

      for (const x of runs.values()) {
        if (!TERMINAL.has(x.status)) problems.push(`cycle ${iter}: run ${x.id} is ${x.status} after restart`);
        const disk = onDisk.get(x.id);
        if (disk?.logged && (x.status !== disk.logged.status || x.terminal_event_id !== disk.logged.event_id)) {
          r.outcomeFlips++;
          problems.push(`cycle ${iter}: run ${x.id} had ${disk.logged.status}/${disk.logged.event_id} in its log at the crash but is ${x.status}/${x.terminal_event_id}`);
        } else if (disk && !TERMINAL.has(disk.status)) {
          if (disk.logged) r.adopted++;
          else {
            // Active when the daemon died, nothing logged → failed / daemon_restarted with a final run.failed.
            const last = x.events[x.events.length - 1];
            if (x.status !== "failed" || x.terminal_reason !== "daemon_restarted")
              problems.push(`cycle ${iter}: run ${x.id} was ${disk.status} at the crash but is ${x.status}/${x.terminal_reason}`);
            else if (!last || last.event_type !== "run.failed" || last.event_id !== x.terminal_event_id)
              problems.push(`cycle ${iter}: run ${x.id} failed on restart but its last event is ${last?.event_type}/${last?.event_id}`);
          }
        } else if (disk && (disk.status !== x.status || disk.terminal_event_id !== x.terminal_event_id)) {
          problems.push(`cycle ${iter}: run ${x.id} was terminal on disk (${disk.status}/${disk.terminal_event_id}) but is ${x.status}/${x.terminal_event_id}`);
        }
        if (TERMINAL.has(x.status) && !x.events.some((e) => e.event_id === x.terminal_event_id))
          problems.push(`cycle ${iter}: run ${x.id}: terminal_event_id ${x.terminal_event_id} is not one of its events`);
      }

      // Every events.jsonl parses line by line, seqs are 0..n gapless, and it matches the API.
      for (const name of fs.readdirSync(path.join(stateDir, "runs"))) {
        const dir = path.join(stateDir, "runs", name);
        if (!fs.statSync(dir).isDirectory()) continue;
        const { events, badLines, torn } = readEventsFile(path.join(dir, "events.jsonl"));
        if (badLines.length || torn) problems.push(`cycle ${iter}: ${name}/events.jsonl: bad lines ${badLines.join(",")}${torn ? " (torn last line)" : ""}`);
        if (!events.every((e, i) => e.seq === i)) problems.push(`cycle ${iter}: ${name}/events.jsonl seqs are not 0..n`);
        const api = runs.get(name);
        if (!api) {
          problems.push(`cycle ${iter}: run dir ${name} is on disk but not served`);
          continue;
        }
        if (api.events.map((e) => e.event_id).join() !== events.map((e) => e.event_id).join())
          problems.push(`cycle ${iter}: ${name}: events.jsonl differs from GET /v1/runs/${name} events`);
      }

      // Every acknowledged session message is still there, in order.
      for (const [sid, contents] of ackedMessages) {
        const reply = await sdk(url2).api.GET("/v1/sessions/{session_id}/messages", { params: { path: { session_id: sid } } });
        const served = reply.data?.map((m) => m.content) ?? [];
        if (reply.response.status !== 200) problems.push(`cycle ${iter}: GET session ${sid} answered ${reply.response.status}`);
        const missing = contents.filter((c) => !served.includes(c));
        r.messagesLost += missing.length;
        if (missing.length) problems.push(`cycle ${iter}: session ${sid} lost ${missing.length} acknowledged message(s)`);
        // Later cycles compare against what is served now (unacknowledged appends may have landed too).
        ackedMessages.set(sid, served);
      }

      // A terminal run_id cannot be created again.
      const someTerminal = [...runs.values()].find((x) => TERMINAL.has(x.status));
      if (someTerminal) {
        const again = await sdk(url2).api.POST("/v1/runs", { body: { file: shortSpec, run_id: someTerminal.id } });
        if (again.response.status !== 409 || again.error?.code !== "ALREADY_TERMINAL") problems.push(`cycle ${iter}: re-create of terminal ${someTerminal.id}: ${again.response.status} ${JSON.stringify(again.error ?? again.data)}`);
      }

      // Everything now served is acknowledged: later crashes must keep it as it is.
      for (const x of runs.values()) {
        if (!acked.has(x.id)) acked.set(x.id, { kind: x.id.includes("-l") ? "long" : "short" });
        if (TERMINAL.has(x.status)) noteTerminal(x.id, x.status, x.terminal_event_id, `after restart ${iter}`);
      }
      log(`CRASH cycle=${iter} burst_ms=${burstMs} inflight_at_kill=${inflightNow} acked_total=${acked.size} terminal_acked=${ackedTerminal.size} lost=${lost}`);
    }
    await stopDaemon(d);
  } finally {
    await killHard(d).catch(() => undefined);
    fs.rmSync(home, { recursive: true, force: true });
  }
  r.ackedRuns = acked.size;
  r.ackedTerminal = ackedTerminal.size;
  r.ackedMessages = [...ackedMessages.values()].reduce((n, l) => n + l.length, 0);
  return r;
}
