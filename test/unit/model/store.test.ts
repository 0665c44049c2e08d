// The state dir's store (src/store/*) on its own: run files and event logs, start-up
// loading (quarantine, interrupted creates, summaries, Rust-format files), stage outputs,
// session logs and the file primitives under them. Temp dirs only; no daemon.
import fs from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunFile } from "../../../src/run-model.js";
import { appendAtomically, readJsonLinesLenient, wholeLinesLength, writeFileAtomic } from "../../../src/store/fsutil.js";
import { RunStore } from "../../../src/store/runs.js";
import { SessionStore } from "../../../src/store/sessions.js";
import { readFreshSummary, writeSummary, type RunSummary } from "../../../src/store/summary.js";
import { tmpDir } from "../../helpers/daemon.js";
import { runFile } from "../../helpers/statefiles.js";

let dir: string;
const stores: RunStore[] = [];
const openStore = () => {
  const s = new RunStore(dir);
  stores.push(s);
  return s;
};

beforeEach(() => {
  dir = tmpDir("vbx-store-");
});
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function summaryOf(f: RunFile, event_count: number): RunSummary {
  const { id, status, file, error, attempt_id, started_at, updated_at, finished_at, terminal_reason, terminal_event_id, exit_code } = f;
  return { id, status, file, error, attempt_id, started_at, updated_at, finished_at, terminal_reason, terminal_event_id, exit_code, sandbox_mode: null, event_count };
}

const eventLine = (id: string, seq: number) => JSON.stringify({ run_id: id, seq, event_id: `${id}-${seq}`, event_type: "run.started" });
const runDir = (id: string) => path.join(dir, "runs", id);

describe("RunStore: a run's files", () => {
  it("saveRun + appendEvent are read back by loadAll, lines verbatim", () => {
    const a = openStore();
    a.saveRun(runFile("r1"));
    a.appendEvent("r1", eventLine("r1", 0));
    a.appendEvent("r1", eventLine("r1", 1));
    a.close();
    const { runs, quarantined, interrupted } = openStore().loadAll();
    expect(quarantined).toEqual([]);
    expect(interrupted).toEqual([]);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.file).toEqual(runFile("r1"));
    expect(runs[0]!.lines).toEqual([eventLine("r1", 0), eventLine("r1", 1)]);
    expect(runs[0]!.legacy).toBe(false);
  });

  it("a torn last line (a crash mid-append) is not loaded, and the next append continues after the last whole line", () => {
    const a = openStore();
    a.saveRun(runFile("r2"));
    a.appendEvent("r2", eventLine("r2", 0));
    a.close();
    fs.appendFileSync(path.join(runDir("r2"), "events.jsonl"), '{"seq": 1, "torn');
    const b = openStore();
    expect(b.loadAll().runs[0]!.events).toHaveLength(1);
    b.appendEvent("r2", eventLine("r2", 1));
    b.close();
    expect(fs.readFileSync(path.join(runDir("r2"), "events.jsonl"), "utf8")).toBe(`${eventLine("r2", 0)}\n${eventLine("r2", 1)}\n`);
  });

  it("rejects unsafe run, stage and artifact names before touching the disk", () => {
    const s = openStore();
    expect(() => s.saveRun(runFile("../escape"))).toThrow(/unsafe run id/);
    expect(() => s.writeResult("r3", "../x", Buffer.from("{}"))).toThrow(/unsafe stage name/);
    expect(() => s.writeArtifact("r3", "main", "a/../b", Buffer.from("x"))).toThrow(/unsafe artifact name/);
    expect(s.readArtifact("r3", "main", "..")).toBeNull();
    expect(fs.readdirSync(path.join(dir, "runs"))).toEqual([]);
  });

  it("stage outputs: written, read back, absent → null; aliasStage serves the same bytes under another stage", () => {
    const s = openStore();
    s.saveRun(runFile("r4"));
    expect(s.readResult("r4", "build")).toBeNull();
    s.writeResult("r4", "build", Buffer.from('{"status":"ok"}'));
    s.writeArtifact("r4", "build", "app.tar", Buffer.from("tar bytes"));
    s.aliasStage("r4", "build", "main", ["app.tar"]);
    expect(s.readResult("r4", "main")?.toString()).toBe('{"status":"ok"}');
    expect(s.readArtifact("r4", "main", "app.tar")?.toString()).toBe("tar bytes");
    expect(s.readArtifact("r4", "main", "other")).toBeNull();
    // One copy on disk: the alias is a hard link.
    const st = fs.statSync(path.join(runDir("r4"), "stages", "main", "artifacts", "app.tar"));
    expect(st.ino).toBe(fs.statSync(path.join(runDir("r4"), "stages", "build", "artifacts", "app.tar")).ino);
  });

  it("discardRun removes what a failed create left", () => {
    const s = openStore();
    s.appendEvent("r5", eventLine("r5", 0));
    s.discardRun("r5");
    expect(fs.existsSync(runDir("r5"))).toBe(false);
  });
});

describe("RunStore.loadAll at start-up", () => {
  it("moves a run with a damaged run.json or event log to quarantine/ with its reason; the others load", () => {
    const s = openStore();
    for (const id of ["good", "badjson", "badlog"]) {
      s.saveRun(runFile(id));
      s.appendEvent(id, eventLine(id, 0));
    }
    s.close();
    fs.writeFileSync(path.join(runDir("badjson"), "run.json"), "{ not json");
    fs.appendFileSync(path.join(runDir("badlog"), "events.jsonl"), "garbage line\n");
    const r = openStore().loadAll();
    expect(r.runs.map((x) => x.file.id)).toEqual(["good"]);
    expect(r.quarantined).toHaveLength(2);
    expect(r.reasons.some((m) => /events\.jsonl: line 2 is not valid JSON/.test(m))).toBe(true);
    for (const q of r.quarantined) {
      expect(q.startsWith("quarantine/")).toBe(true);
      expect(fs.existsSync(path.join(dir, q))).toBe(true);
      expect(fs.readFileSync(path.join(dir, `${q}.reason`), "utf8").length).toBeGreaterThan(1);
    }
    expect(fs.existsSync(runDir("badjson"))).toBe(false);
  });

  it("a run.json that names another run is quarantined", () => {
    const s = openStore();
    s.saveRun(runFile("named"));
    s.close();
    fs.writeFileSync(path.join(runDir("named"), "run.json"), JSON.stringify(runFile("other")));
    const r = openStore().loadAll();
    expect(r.runs).toEqual([]);
    expect(r.reasons).toEqual(["run.json does not name run named"]);
  });

  it("a run directory without run.json (a create interrupted before its commit) is removed", () => {
    const s = openStore();
    s.appendEvent("half", eventLine("half", 0));
    s.close();
    const r = openStore().loadAll();
    expect(r.interrupted).toEqual(["half"]);
    expect(r.runs).toEqual([]);
    expect(fs.existsSync(runDir("half"))).toBe(false);
  });

  it("`accept` throwing quarantines that run only", () => {
    const s = openStore();
    s.saveRun(runFile("a"));
    s.saveRun(runFile("b"));
    s.close();
    const r = openStore().loadAll((run) => {
      if (run.file.id === "b") throw new Error("does not conform");
      return run;
    });
    expect(r.runs.map((x) => x.file.id)).toEqual(["a"]);
    expect(r.reasons).toEqual(["does not conform"]);
  });

  it("a terminal run with an up-to-date summary is listed from it; a stale one is read from its files", () => {
    const s = openStore();
    s.saveRun(runFile("t1", { status: "succeeded" }));
    s.appendEvent("t1", eventLine("t1", 0));
    s.closeRun("t1");
    const summary = summaryOf(runFile("t1", { status: "succeeded" }), 1);
    s.saveSummary(summary);
    const accept = (v: unknown) => v as RunSummary;
    const fresh = openStore().loadAll(undefined, accept);
    expect(fresh.stored).toEqual([summary]);
    expect(fresh.runs).toEqual([]);

    fs.appendFileSync(path.join(runDir("t1"), "events.jsonl"), eventLine("t1", 1) + "\n");
    expect(readFreshSummary(runDir("t1"))).toBeNull();
    const stale = openStore().loadAll(undefined, accept);
    expect(stale.stored).toEqual([]);
    expect(stale.runs[0]!.events).toHaveLength(2);
  });

  it("reads a Rust-format runs/<id>.json (events inline) as a legacy run, filling what its events lack; retireLegacy keeps it as a backup", () => {
    fs.mkdirSync(path.join(dir, "runs"), { recursive: true });
    const events = [JSON.parse(eventLine("old", 0)) as unknown];
    fs.writeFileSync(path.join(dir, "runs", "old.json"), JSON.stringify({ ...runFile("old", { status: "succeeded" }), events }));
    const s = openStore();
    const r = s.loadAll();
    expect(r.runs).toHaveLength(1);
    expect(r.runs[0]).toMatchObject({ legacy: true, file: { id: "old", status: "succeeded" } });
    // What the Rust daemon's events lack is filled in as we always serve it (store/legacy.ts).
    expect(r.runs[0]!.events).toEqual([{ ...(events[0] as object), ts_ms: 0, level: "info", message: "", attempt_id: 1, timestamp: "1970-01-01T00:00:00.000Z", event_type_v2: "RunStarted", payload: null }]);
    s.retireLegacy("old");
    expect(fs.existsSync(path.join(dir, "runs", "old.json.migrated"))).toBe(true);
    expect(openStore().loadAll().runs).toEqual([]);
  });
});

describe("summary.json", () => {
  it("is fresh only while run.json and events.jsonl are as they were when it was written", () => {
    const d = path.join(dir, "one");
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, "run.json"), "{}");
    fs.writeFileSync(path.join(d, "events.jsonl"), "");
    writeSummary(d, summaryOf(runFile("one", { status: "failed" }), 0));
    expect(readFreshSummary(d)).toEqual(summaryOf(runFile("one", { status: "failed" }), 0));
    fs.writeFileSync(path.join(d, "run.json"), '{"changed": true}');
    expect(readFreshSummary(d)).toBeNull();
    fs.writeFileSync(path.join(d, "summary.json"), "{torn");
    expect(readFreshSummary(d)).toBeNull();
  });
});

describe("SessionStore", () => {
  it("appends messages and lists them in order; an unknown session is empty", () => {
    const s = new SessionStore(dir);
    expect(s.list("s1")).toEqual([]);
    s.append("s1", { ts_ms: 1, role: "user", content: "hi" });
    s.append("s1", { ts_ms: 2, role: "assistant", content: "hello" });
    expect(s.list("s1").map((m) => m.content)).toEqual(["hi", "hello"]);
    expect(() => s.append("../x", { ts_ms: 3, role: "user", content: "x" })).toThrow(/unsafe session id/);
  });

  it("a damaged line is moved to quarantine/ and the log rewritten without it", () => {
    const told: string[] = [];
    const s = new SessionStore(dir, { onQuarantine: (file) => told.push(file) });
    s.append("s2", { ts_ms: 1, role: "user", content: "a" });
    fs.appendFileSync(path.join(dir, "sessions", "s2.jsonl"), "not json\n");
    s.append("s2", { ts_ms: 2, role: "user", content: "b" });
    expect(s.list("s2").map((m) => m.content)).toEqual(["a", "b"]);
    expect(told).toHaveLength(1);
    expect(fs.readFileSync(path.join(dir, told[0]!), "utf8")).toBe("not json\n");
    expect(fs.readFileSync(path.join(dir, "sessions", "s2.jsonl"), "utf8").split("\n").filter(Boolean)).toHaveLength(2);
  });
});

describe("file primitives", () => {
  it("writeFileAtomic replaces the whole file and leaves no temp file", () => {
    const f = path.join(dir, "x.json");
    writeFileAtomic(f, "first");
    writeFileAtomic(f, "second", { durable: false });
    expect(fs.readFileSync(f, "utf8")).toBe("second");
    expect(fs.readdirSync(dir)).toEqual(["x.json"]);
  });

  it("readJsonLinesLenient: values and their lines, bad complete lines reported, a torn tail cut off the file", () => {
    const f = path.join(dir, "l.jsonl");
    fs.writeFileSync(f, '{"a":1}\nnope\n{"b":2}\n{"c":');
    const r = readJsonLinesLenient(f);
    expect(r.values).toEqual([{ a: 1 }, { b: 2 }]);
    expect(r.lines).toEqual(['{"a":1}', '{"b":2}']);
    expect(r.badLines).toEqual([2]);
    expect(r.badText).toEqual(["nope"]);
    expect(r.validBytes).toBe(Buffer.byteLength('{"a":1}\nnope\n{"b":2}\n'));
    expect(fs.statSync(f).size).toBe(r.validBytes);
    expect(readJsonLinesLenient(path.join(dir, "absent.jsonl"))).toEqual({ values: [], lines: [], validBytes: 0, badLines: [], badText: [] });
  });

  it("appendAtomically cuts what follows the valid bytes before appending; wholeLinesLength finds the last newline", () => {
    const f = path.join(dir, "a.jsonl");
    fs.writeFileSync(f, "one\ntwo\npartial");
    const fd = fs.openSync(f, "a+");
    try {
      const valid = wholeLinesLength(fd);
      expect(valid).toBe(8);
      expect(appendAtomically(fd, valid, "three\n", "a.jsonl")).toBe(14);
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(f, "utf8")).toBe("one\ntwo\nthree\n");
  });
});
