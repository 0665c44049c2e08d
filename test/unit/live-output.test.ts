// A step's output while it runs: `stage.output` events (LiveOutput, the mock sandbox, the service).
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { LIVE_CHUNK_BYTES, LIVE_FLUSH_MS, LiveOutput, completeUtf8Length } from "../../src/engine/live-output.js";
import type { EngineEvent } from "../../src/engine/types.js";
import { MockSandbox } from "../../src/sandbox/mock.js";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { createRun, eventsOf, waitForEvent, waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

type Payload = { stream: string; offset: number; bytes: number; encoding: "utf8" | "base64"; data: string; stage_attempt: number };
const payloads = (events: EngineEvent[]) => events.filter((e) => e.type === "stage.output").map((e) => e.payload as Payload);
const bytesOf = (p: Payload) => Buffer.from(p.data, p.encoding === "utf8" ? "utf8" : "base64");
/** The stream rebuilt from its events; also checks that they are contiguous. */
function rebuild(ps: Payload[], stream = "stdout"): Buffer {
  let at = 0;
  const parts: Buffer[] = [];
  for (const p of ps.filter((x) => x.stream === stream)) {
    expect(p.offset).toBe(at);
    const b = bytesOf(p);
    expect(b.length).toBe(p.bytes);
    parts.push(b);
    at += b.length;
  }
  return Buffer.concat(parts);
}

function live(o: { maxBytes?: number; maxEvents?: number } = {}) {
  const events: EngineEvent[] = [];
  const l = new LiveOutput({
    context: { stage_name: "s" },
    attempt: 1,
    maxBytes: o.maxBytes ?? 1 << 20,
    maxEvents: o.maxEvents ?? 2000,
    emit: (e) => void events.push(e),
  });
  return { l, events };
}

describe("LiveOutput", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends the first write at once and coalesces a burst of small writes into one more event", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const { l, events } = live();
    for (let i = 0; i < 1000; i++) l.push("stdout", Buffer.from(`${i}\n`));
    expect(payloads(events)).toHaveLength(1);
    vi.advanceTimersByTime(LIVE_FLUSH_MS);
    expect(payloads(events)).toHaveLength(2);
    l.finish();
    const want = Array.from({ length: 1000 }, (_, i) => `${i}\n`).join("");
    expect(rebuild(payloads(events)).toString()).toBe(want);
    expect(events[0]).toMatchObject({ type: "stage.output", stream: "stdout", stage_name: "s" });
  });

  it("full chunks go out at once; a flood is cut at the byte cap", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const { l, events } = live({ maxBytes: 40_000 });
    l.push("stdout", Buffer.alloc(LIVE_CHUNK_BYTES * 4, "y"));
    const ps = payloads(events);
    expect(ps.map((p) => p.bytes)).toEqual([LIVE_CHUNK_BYTES, LIVE_CHUNK_BYTES]);
    const stats = l.finish({ stdout: Buffer.alloc(40_000, "y"), stderr: Buffer.alloc(0) });
    expect(rebuild(payloads(events)).length).toBe(40_000);
    expect(stats).toMatchObject({ bytes: { stdout: 40_000, stderr: 0 }, capped: false });
  });

  it("stops at the event cap and says so", () => {
    const { l, events } = live({ maxEvents: 3 });
    const kept = Buffer.alloc(LIVE_CHUNK_BYTES * 6, "z");
    l.push("stdout", kept);
    l.push("stderr", Buffer.from("late"));
    const stats = l.finish({ stdout: kept, stderr: Buffer.from("late") });
    expect(payloads(events)).toHaveLength(3);
    expect(stats).toEqual({ bytes: { stdout: LIVE_CHUNK_BYTES * 3, stderr: 0 }, events: 3, capped: true });
  });

  it("never splits a UTF-8 character; bytes that are not UTF-8 travel as base64", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const { l, events } = live();
    const e = Buffer.from("é€😀");
    l.push("stdout", e.subarray(0, 1)); // half of é: nothing yet
    expect(payloads(events)).toHaveLength(0);
    l.push("stdout", e.subarray(1, 4)); // é and two bytes of €
    expect(payloads(events).map((p) => p.data)).toEqual(["é"]);
    vi.advanceTimersByTime(LIVE_FLUSH_MS);
    l.push("stdout", e.subarray(4));
    vi.advanceTimersByTime(LIVE_FLUSH_MS);
    l.push("stderr", Buffer.from([0xff, 0x00, 0x41]));
    l.finish();
    const ps = payloads(events);
    expect(ps.filter((p) => p.stream === "stdout").every((p) => p.encoding === "utf8")).toBe(true);
    expect(rebuild(ps).toString()).toBe("é€😀");
    expect(ps.find((p) => p.stream === "stderr")).toMatchObject({ encoding: "base64", data: "/wBB", bytes: 3, offset: 0 });
    expect(completeUtf8Length(Buffer.from([0x41, 0xf0, 0x9f]))).toBe(1);
    expect(completeUtf8Length(Buffer.from([0x41, 0xff]))).toBe(2);
  });

  it("sends at the end what the sandbox did not deliver live (an old guest image), and nothing after finish", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const { l, events } = live();
    l.push("stdout", Buffer.from("hel"));
    l.finish({ stdout: Buffer.from("hello\n"), stderr: Buffer.from("warn\n") });
    l.push("stdout", Buffer.from("more"));
    vi.advanceTimersByTime(10 * LIVE_FLUSH_MS);
    expect(rebuild(payloads(events)).toString()).toBe("hello\n");
    expect(rebuild(payloads(events), "stderr").toString()).toBe("warn\n");
    expect(vi.getTimerCount()).toBe(0);

    // A long end-of-exec fill is cut into chunks at character boundaries, each valid text.
    const wide = live();
    const text = "é".repeat(10_000);
    wide.l.finish({ stdout: Buffer.from(text), stderr: Buffer.alloc(0) });
    const ps = payloads(wide.events);
    expect(ps.length).toBe(2);
    expect(ps.every((p) => p.encoding === "utf8")).toBe(true);
    expect(rebuild(ps).toString()).toBe(text);
  });
});

describe("mock sandbox", () => {
  it("hands each write of a script to onOutput as it happens, within maxOutputBytes", async () => {
    const sb = new MockSandbox();
    const vm = await sb.open({ runId: "r", stage: "s", attempt: 1, memoryMb: 256, vcpus: 1, network: false, signal: new AbortController().signal });
    const seen: string[] = [];
    const r = await vm.exec({
      program: "sh",
      args: ["-c", "echo one; echo two; cat nope; echo three"],
      env: {},
      stdin: Buffer.alloc(0),
      signal: new AbortController().signal,
      maxOutputBytes: 10,
      onOutput: (s, d) => seen.push(`${s}:${d}`),
    });
    expect(r.stdout.toString()).toBe("one\ntwo\nth");
    expect(seen).toEqual(["stdout:one\n", "stdout:two\n", "stderr:cat: nope: No such file or directory\n".slice(0, 17), "stdout:th"]);
  });
});

describe("stage.output through the daemon (mock sandbox)", () => {
  const open: TestDaemon[] = [];
  afterAll(async () => {
    for (const t of open) await t.d.close();
  });
  const dir = tmpDir("vbx-live-spec-");
  const RESULT = 'cat > result.json <<EOF\n{"status":"ok"}\nEOF\n';

  it("a step's first line is visible before its second and before the stage ends; log.chunk is unchanged", async () => {
    const t = await startDaemon(tmpDir("vbx-live-"));
    open.push(t);
    const spec = workflow("live", [{ name: "talk", run: { program: "sh", args: ["-c", `${RESULT}echo first; sleep 1; echo second`] } }]);
    const id = await createRun(t.url, writeSpec(dir, spec));
    const seen = await waitForEvent(t.url, id, (e) => e.event_type === "stage.output", "the first stage.output");
    const types = seen.events.map((e) => e.event_type);
    const out = seen.events.filter((e) => e.event_type === "stage.output");
    expect(out.map((e) => e.payload!.data).join("")).toBe("first\n");
    expect(types).not.toContain("stage.completed");
    expect(out[0]).toMatchObject({ stage_name: "talk", stream: "stdout", level: "info", payload: { stream: "stdout", offset: 0, bytes: 6, encoding: "utf8", stage_attempt: 1 } });

    const run = await waitForTerminal(t.url, id);
    expect(run.status).toBe("succeeded");
    const all = run.events.map((e) => e.event_type);
    const outs = eventsOf(run, "stage.output");
    expect(outs.map((e) => e.payload!.data)).toEqual(["first\n", "second\n"]);
    expect(all.lastIndexOf("stage.output")).toBeLessThan(all.indexOf("stage.completed"));
    // log.chunk keeps its meaning: the output step's lines, after the terminal event.
    expect(run.events.filter((e) => e.event_type === "log.chunk").map((e) => e.message)).toEqual(["first", "second"]);
    expect(all.indexOf("run.finished")).toBeLessThan(all.indexOf("log.chunk"));
    const v2 = await sdk(t.url).listEvents(id, { apiVersion: "v2" });
    expect(v2.filter((e) => e.event_type === "StageOutput")).toHaveLength(2);
  });

  it("caps live events per stage attempt (max-output-events) and reports it; a late chunk after cancel is dropped", async () => {
    const t = await startDaemon(tmpDir("vbx-live-"), { limits: { maxOutputEvents: 5 } });
    open.push(t);
    const lines = Array.from({ length: 20 }, (_, i) => `echo l${i}; sleep 0.15`).join("; ");
    const spec = workflow("many", [{ name: "drip", run: { program: "sh", args: ["-c", `${RESULT}${lines}`] } }]);
    const run = await waitForTerminal(t.url, await createRun(t.url, writeSpec(dir, spec)), 30_000);
    expect(run.status).toBe("succeeded");
    const outs = eventsOf(run, "stage.output");
    expect(outs).toHaveLength(5);
    const [cut] = eventsOf(run, "stage.output_truncated");
    const streamed = outs.reduce((n, e) => n + e.payload.bytes, 0);
    expect(cut.payload).toMatchObject({ stream: "stdout", live_bytes: streamed, limit_events: 5 });
    expect(cut.payload!.kept_bytes).toBe(cut.payload!.total_bytes);

    const id = await createRun(t.url, writeSpec(dir, workflow("cancelled", [{ name: "c", run: { program: "sh", args: ["-c", "echo a; sleep 30; echo b"] } }])));
    await waitForEvent(t.url, id, (e) => e.event_type === "stage.output", "the first chunk");
    expect((await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } } })).response.status).toBe(200);
    await waitFor(() => t.d.service.executingCount() === 0, "the engine to wind down");
    const st = await sdk(t.url).getRun(id);
    const types = st.events.map((e) => e.event_type);
    expect(types[types.length - 1]).toBe("run.cancelled");
    expect(st.events.filter((e) => e.event_type === "stage.output").map((e) => e.payload!.data)).toEqual(["a\n"]);
  });
});
