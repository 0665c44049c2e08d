import { describe, it, expect } from "vitest";
import {
  FrameDecoder,
  MAX_FRAME_PAYLOAD,
  ProtocolError,
  buildExecScript,
  checkRelPath,
  checksum,
  encodeFrame,
  shQuote,
} from "../../src/sandbox/qemu/protocol.js";

describe("frame encoding", () => {
  it("encodes a header line followed by the raw payload", () => {
    const f = encodeFrame("OUT", 7, 0, Buffer.from("hi\n"));
    expect(f.toString("latin1")).toBe(`VBX1 OUT 7 0 3 ${checksum(Buffer.from("hi\n"))}\nhi\n`);
  });

  it("uses the zlib CRC-32 that busybox crc32 prints", () => {
    expect(checksum(Buffer.from("hello"))).toBe("3610a686");
    expect(checksum(Buffer.alloc(0))).toBe("00000000");
  });

  it("round-trips binary payloads, negative args and empty frames", () => {
    const bin = Buffer.from([0, 1, 2, 10, 13, 255, 0x56, 0x42, 0x58, 0x31, 0x20]);
    const wire = Buffer.concat([
      encodeFrame("FILE", 1, 0, bin),
      encodeFrame("EXIT", 2, -1),
      encodeFrame("NOFILE", 3, 0),
    ]);
    const frames = new FrameDecoder().push(wire);
    expect(frames.map((f) => [f.type, f.id, f.arg, f.payload.length])).toEqual([
      ["FILE", 1, 0, bin.length],
      ["EXIT", 2, -1, 0],
      ["NOFILE", 3, 0, 0],
    ]);
    expect(frames[0].payload.equals(bin)).toBe(true);
  });

  it("decodes frames split at every byte boundary", () => {
    const wire = Buffer.concat([encodeFrame("OUT", 1, 0, Buffer.from("hello world")), encodeFrame("EXIT", 1, 3)]);
    const d = new FrameDecoder();
    const frames = [];
    for (let i = 0; i < wire.length; i++) frames.push(...d.push(wire.subarray(i, i + 1)));
    expect(frames.map((f) => f.type)).toEqual(["OUT", "EXIT"]);
    expect(frames[0].payload.toString()).toBe("hello world");
    expect(frames[1].arg).toBe(3);
    expect(() => d.end()).not.toThrow();
  });

  it("refuses to encode invalid frames", () => {
    expect(() => encodeFrame("bad type", 1, 0)).toThrow(ProtocolError);
    expect(() => encodeFrame("OUT", -1, 0)).toThrow(ProtocolError);
    expect(() => encodeFrame("OUT", 1, 0, Buffer.alloc(MAX_FRAME_PAYLOAD + 1))).toThrow(/exceeds/);
  });
});

describe("frame decoding errors", () => {
  it("strict mode rejects bytes that are not a frame header", () => {
    const d = new FrameDecoder();
    expect(() => d.push(Buffer.from("[    0.1234] kernel noise\n"))).toThrow(/malformed frame/);
    // once failed, the stream stays failed
    expect(() => d.push(encodeFrame("OUT", 1, 0))).toThrow(ProtocolError);
  });

  it("rejects a checksum mismatch", () => {
    const wire = encodeFrame("OUT", 1, 0, Buffer.from("hello"));
    wire[wire.length - 1] ^= 0x01;
    expect(() => new FrameDecoder().push(wire)).toThrow(/checksum mismatch on OUT frame/);
  });

  it("rejects an oversized frame from its header, before buffering the payload", () => {
    const header = Buffer.from(`VBX1 OUT 1 0 ${MAX_FRAME_PAYLOAD + 1} 00000000\n`);
    expect(() => new FrameDecoder().push(header)).toThrow(/oversized frame/);
    const small = new FrameDecoder({ maxPayload: 10 });
    expect(() => small.push(encodeFrame("FILE", 1, 0, Buffer.alloc(11)))).toThrow(/exceeds the 10-byte limit/);
  });

  it("rejects a header line that never ends", () => {
    const d = new FrameDecoder();
    expect(() => d.push(Buffer.from("VBX1 OUT " + "1".repeat(200)))).toThrow(/header longer/);
  });

  it("reports a truncated frame at end of stream", () => {
    const wire = encodeFrame("OUT", 1, 0, Buffer.from("hello world"));
    const d = new FrameDecoder();
    expect(d.push(wire.subarray(0, wire.length - 3))).toEqual([]);
    expect(() => d.end()).toThrow(/truncated frame: OUT expected 11 payload bytes, got 8/);
    const h = new FrameDecoder();
    h.push(Buffer.from("VBX1 OU"));
    expect(() => h.end()).toThrow(/truncated frame header/);
  });

  it("rejects malformed numbers in the header", () => {
    for (const line of ["VBX1 OUT x 0 0 00000000\n", "VBX1 OUT 1 0 -5 00000000\n", "VBX1 OUT 1 0 0 0000zz00\n", "VBX1 out 1 0 0 00000000\n"]) {
      expect(() => new FrameDecoder().push(Buffer.from(line)), line).toThrow(ProtocolError);
    }
  });
});

describe("exec script and paths", () => {
  it("quotes arguments for sh", () => {
    expect(shQuote("it's")).toBe(`'it'\\''s'`);
    const s = buildExecScript("echo", ["a b", "$HOME", "it's"], { FOO: "x'y" });
    expect(s).toContain(`'echo' 'a b' '$HOME' 'it'\\''s'`);
    expect(s).toContain(`'FOO=x'\\''y'`);
    expect(s.startsWith("cd /workspace")).toBe(true);
  });

  it("rejects values exec cannot carry", () => {
    expect(() => buildExecScript("echo", ["a\0b"], {})).toThrow(/NUL/);
    expect(() => buildExecScript("echo", [], { "BAD-NAME": "1" })).toThrow(/invalid environment/);
    expect(() => buildExecScript("", [], {})).toThrow(/empty program/);
    expect(() => buildExecScript("A=B", [], {})).toThrow(/invalid program/);
  });

  it("checks workspace-relative paths", () => {
    expect(checkRelPath("result.json")).toBeNull();
    expect(checkRelPath("out/a..b.txt")).toBeNull();
    expect(checkRelPath("/etc/passwd")).toMatch(/absolute/);
    expect(checkRelPath("../x")).toMatch(/\.\./);
    expect(checkRelPath("a/../../x")).toMatch(/\.\./);
    expect(checkRelPath("")).toMatch(/empty/);
    expect(checkRelPath("a\nb")).toMatch(/control/);
  });
});
