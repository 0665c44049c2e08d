// Output and artifact bounds at the engine and mock-sandbox level (no daemon).
import { describe, expect, it } from "vitest";
import { runEngine } from "../../src/engine/index.js";
import { DEFAULT_POLICY, type EngineEvent } from "../../src/engine/types.js";
import { DEFAULT_LIMITS } from "../../src/limits.js";
import { MockSandbox } from "../../src/sandbox/mock.js";
import { FrameDecoder, ProtocolError, encodeFrame } from "../../src/sandbox/qemu/protocol.js";
import { FileTooBigError, type Sandbox, type StageVm } from "../../src/sandbox/types.js";
import type { RunSpec } from "../../src/spec/types.js";

const signal = () => new AbortController().signal;

async function stage(sb: MockSandbox): Promise<StageVm> {
  return sb.open({ runId: "r", stage: "s", attempt: 1, memoryMb: 256, vcpus: 1, network: false, signal: signal() });
}

describe("mock sandbox bounds", () => {
  // Before: the mock returned everything a command wrote, whatever its size.
  it("keeps maxOutputBytes of stdout and reports the full size", async () => {
    const vm = await stage(new MockSandbox());
    const r = await vm.exec({ program: "echo", args: ["x".repeat(99)], env: {}, stdin: Buffer.alloc(0), signal: signal(), maxOutputBytes: 10 });
    expect(r.stdout.toString()).toBe("x".repeat(10));
    expect(r.stdoutBytes).toBe(100);
  });

  // Before: every write succeeded; the workspace (daemon memory) grew without bound.
  it("a write past the workspace bound fails with ENOSPC and the workspace stays within it", async () => {
    const sb = new MockSandbox({ maxWorkspaceBytes: 4096 });
    const vm = await stage(sb);
    const script = ["cat > f <<EOF", "a".repeat(1023), "EOF", "cat f f > g && cat g g > f && cat f f > g && echo never"].join("\n");
    const r = await vm.exec({ program: "sh", args: ["-c", script], env: {}, stdin: Buffer.alloc(0), signal: signal() });
    expect(r.exitCode).toBe(1);
    expect(r.stderr.toString()).toMatch(/No space left on device/);
    expect(r.stdout.toString()).not.toContain("never");
    const total = [...sb.files.values()].reduce((n, b) => n + b.length, 0);
    expect(total).toBeLessThanOrEqual(4096);
  });

  // Before: a too-big file was a plain Error, indistinguishable from other failures.
  it("readFile over maxBytes throws FileTooBigError with the size", async () => {
    const sb = new MockSandbox();
    const vm = await stage(sb);
    await vm.exec({ program: "sh", args: ["-c", "cat > big <<EOF\n0123456789\nEOF"], env: {}, stdin: Buffer.alloc(0), signal: signal() });
    const err = await vm.readFile("big", 5).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileTooBigError);
    expect((err as FileTooBigError).size).toBe(11);
  });
});

describe("engine bounds", () => {
  /** A sandbox that ignores maxOutputBytes, like a guest image from before the cap. */
  const flooding: Sandbox = {
    kind: "mock",
    async open() {
      return {
        exec: async () => ({ exitCode: 0, stdout: Buffer.from("y\n".repeat(5000)), stderr: Buffer.from("e".repeat(300)) }),
        readFile: async () => null,
        stop: async () => ({ exitCode: 0, signal: null, killed: false }),
      };
    },
  };

  // Before: the engine passed on whatever the sandbox returned.
  it("truncates what an old guest sends past the cap and emits one stage.output_truncated per stream", async () => {
    const events: EngineEvent[] = [];
    const spec: RunSpec = {
      api_version: "v1",
      kind: "workflow",
      name: "t",
      sandbox: { mode: "mock", memory_mb: 256, vcpus: 1, network: false, env: {} },
      workflow: { steps: [{ name: "a", run: { program: "yes", args: [] } }] },
    };
    const result = await runEngine({
      runId: "r",
      spec,
      policy: DEFAULT_POLICY,
      sandbox: flooding,
      signal: signal(),
      now: Date.now,
      limits: { ...DEFAULT_LIMITS, maxStageOutputBytes: 256 },
      hooks: { event: (e) => void events.push(e), planStages: () => {}, stage: () => {}, vmDelta: () => {}, output: () => {} },
    });
    expect(result.report.output).toBe("y\n".repeat(128));
    const t = events.filter((e) => e.type === "stage.output_truncated");
    expect(t.map((e) => e.payload)).toEqual([
      { stream: "stdout", kept_bytes: 256, total_bytes: 10_000, limit_bytes: 256 },
      { stream: "stderr", kept_bytes: 256, total_bytes: 300, limit_bytes: 256 },
    ]);
  });
});

describe("frame decoder with a large payload in small chunks", () => {
  // Before: every chunk was joined into the buffer (quadratic copying for a large OUT frame).
  it("decodes a 1 MiB frame sent 4 KiB at a time, with the next frame in the last chunk", () => {
    const payload = Buffer.alloc(1024 * 1024, "y");
    const wire = Buffer.concat([encodeFrame("OUT", 3, 2_000_000, payload), encodeFrame("EXIT", 3, 0)]);
    const d = new FrameDecoder();
    const frames = [];
    for (let i = 0; i < wire.length; i += 4096) {
      frames.push(...d.push(wire.subarray(i, i + 4096)));
      if (frames.length === 0 && i > 0) expect(d.bufferedBytes).toBe(i + 4096 - wire.indexOf(0x0a) - 1);
    }
    expect(frames.map((f) => [f.type, f.id, f.arg, f.payload.length])).toEqual([
      ["OUT", 3, 2_000_000, payload.length],
      ["EXIT", 3, 0, 0],
    ]);
    expect(frames[0].payload.equals(payload)).toBe(true);
    expect(() => d.end()).not.toThrow();
  });

  it("a stream cut inside a collected payload is a truncated frame", () => {
    const wire = encodeFrame("OUT", 1, 0, Buffer.alloc(100_000, "z"));
    const d = new FrameDecoder();
    for (let i = 0; i < 50_000; i += 1000) d.push(wire.subarray(i, i + 1000));
    expect(() => d.end()).toThrow(ProtocolError);
    expect(() => d.end()).toThrow(/expected 100000 payload bytes, got \d+/);
  });
});
