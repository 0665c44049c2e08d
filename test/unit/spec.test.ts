import { describe, it, expect, beforeAll } from "vitest";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { loadSpec, MAX_SPEC_BYTES } from "../../src/spec/load.js";
import { SpecError } from "../../src/spec/errors.js";
import { tmpDir } from "../helpers/daemon.js";

let dir: string;
beforeAll(() => {
  dir = tmpDir("vbx-spec-");
});

let n = 0;
function file(content: string | Buffer, ext = ".json"): string {
  const f = path.join(dir, `s${++n}${ext}`);
  fs.writeFileSync(f, content);
  return f;
}
const json = (o: unknown) => file(JSON.stringify(o));

const base = (steps: unknown[], extra: Record<string, unknown> = {}) => ({
  api_version: "v1",
  kind: "workflow",
  name: "demo",
  sandbox: { mode: "mock" },
  workflow: { steps, ...extra },
});
const echo = (name: string, more: Record<string, unknown> = {}) => ({ name, run: { program: "echo", args: [name] }, ...more });

async function rejects(f: string, re: RegExp): Promise<string> {
  const err = await loadSpec(f).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${f} to be rejected`).toBeInstanceOf(SpecError);
  expect((err as Error).message).toMatch(re);
  return (err as Error).message;
}

describe("loadSpec: valid files", () => {
  it("loads YAML and fills sandbox defaults", async () => {
    const f = file(
      [
        "api_version: v1",
        "kind: workflow",
        "name: demo",
        "sandbox: {mode: mock}",
        "workflow:",
        "  steps:",
        "    - name: fetch",
        '      run: {program: echo, args: ["hello"]}',
        "    - name: shout",
        "      depends_on: [fetch]",
        '      run: {program: tr, args: ["a-z", "A-Z"], stdin_from: fetch}',
        "      timeout_secs: 30",
        "  output_step: shout",
        "",
      ].join("\n"),
      ".yaml",
    );
    const spec = await loadSpec(f);
    expect(spec.name).toBe("demo");
    expect(spec.sandbox).toEqual({ mode: "mock", memory_mb: 512, vcpus: 1, network: false, env: {} });
    expect(spec.workflow!.steps.map((s) => s.name)).toEqual(["fetch", "shout"]);
    expect(spec.workflow!.steps[1].run.stdin_from).toBe("fetch");
    expect(spec.workflow!.output_step).toBe("shout");
  });

  it("loads .yml as YAML and JSON otherwise", async () => {
    expect((await loadSpec(file("api_version: v1\nkind: agent\nname: a\nagent: {prompt: hi}\n", ".yml"))).kind).toBe("agent");
    const spec = await loadSpec(json(base([echo("a"), echo("b", { depends_on: ["a"] })])));
    expect(spec.workflow!.steps).toHaveLength(2);
    expect(spec.sandbox.mode).toBe("mock");
  });

  it("defaults sandbox.mode to auto when sandbox is absent", async () => {
    const { sandbox: _s, ...noSandbox } = base([echo("a")]);
    expect((await loadSpec(json(noSandbox))).sandbox.mode).toBe("auto");
  });

  it("loads a pipeline with a fan_out", async () => {
    const spec = await loadSpec(
      json({
        api_version: "v1",
        kind: "pipeline",
        name: "p",
        sandbox: { mode: "mock" },
        pipeline: {
          boxes: [{ name: "a", prompt: "x" }, { name: "b", prompt: "y" }, { name: "c", prompt: "z" }],
          stages: [{ type: "box", name: "a" }, { type: "fan_out", boxes: ["b", "c"] }],
        },
      }),
    );
    expect(spec.pipeline!.stages).toHaveLength(2);
  });
});

describe("loadSpec: invalid files", () => {
  it("api_version v2 is rejected naming the field", async () => {
    await rejects(json({ ...base([echo("a")]), api_version: "v2" }), /api_version/);
  });

  it("missing name", async () => {
    const { name: _n, ...noName } = base([echo("a")]);
    await rejects(json(noName), /name.*required/);
  });

  it("kind without its section", async () => {
    await rejects(json({ api_version: "v1", kind: "agent", name: "x" }), /agent/);
  });

  it("unknown top-level property names it", async () => {
    await rejects(json({ ...base([echo("a")]), bogus: 1 }), /bogus/);
  });

  it("unknown dependency", async () => {
    await rejects(json(base([echo("a", { depends_on: ["ghost"] })])), /unknown dependency ghost/);
  });

  it("self dependency", async () => {
    await rejects(json(base([echo("a", { depends_on: ["a"] }), echo("b")], { output_step: "b" })), /itself|cycle/);
  });

  it("cycle", async () => {
    const msg = await rejects(
      json(base([echo("a", { depends_on: ["c"] }), echo("b", { depends_on: ["a"] }), echo("c", { depends_on: ["b"] }), echo("d")], { output_step: "d" })),
      /cycle/,
    );
    expect(msg).toMatch(/a/);
    expect(msg).not.toMatch(/\bd\b.*cycle/);
  });

  it("service mode combined with timeout_secs", async () => {
    await rejects(json(base([echo("a", { mode: "service", timeout_secs: 5 })])), /timeout_secs.*service|service.*timeout_secs/);
  });

  it("stdin_from not in depends_on", async () => {
    await rejects(
      json(base([echo("a"), echo("b"), { name: "c", depends_on: ["a"], run: { program: "cat", stdin_from: "b" } }], { output_step: "c" })),
      /stdin_from/,
    );
  });

  it("output_step naming an unknown step", async () => {
    await rejects(json(base([echo("a")], { output_step: "nope" })), /output_step/);
  });

  it("multiple leaves without output_step", async () => {
    await rejects(json(base([echo("a"), echo("b")])), /output_step.*leaf|leaf.*output_step/);
  });

  it("duplicate step names", async () => {
    await rejects(json(base([echo("a"), echo("a")])), /duplicate/);
  });

  it("unsafe step name", async () => {
    await rejects(json(base([echo("../etc")])), /name|pattern/);
  });

  it("pipeline stage naming an unknown box", async () => {
    await rejects(
      json({ api_version: "v1", kind: "pipeline", name: "p", pipeline: { boxes: [{ name: "a", prompt: "x" }], stages: [{ type: "box", name: "zz" }] } }),
      /unknown box zz/,
    );
  });

  it("malformed JSON and YAML name the file", async () => {
    const j = json("x");
    fs.writeFileSync(j, "{ not json");
    await rejects(j, /not valid JSON/);
    await rejects(file("a: [1, 2\n", ".yaml"), /YAML/);
  });

  it("missing file", async () => {
    await rejects(path.join(dir, "does-not-exist.json"), /cannot open|ENOENT/);
  });
});

describe("loadSpec: hostile files", () => {
  it("a YAML alias bomb fails fast with a clear error", async () => {
    const lines = ['a: ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    const names = "abcdefghi";
    for (let i = 1; i < names.length; i++) {
      const prev = names[i - 1];
      lines[i - 1] = lines[i - 1].replace(/^(\w): /, `$1: &${names[i - 1]} `);
      lines.push(`${names[i]}: [${Array(9).fill(`*${prev}`).join(",")}]`);
    }
    const f = file(lines.join("\n") + "\n", ".yaml");
    await rejects(f, /alias/i);
  });

  it("a 2 MiB file is refused by size", async () => {
    const big = JSON.stringify({ ...base([echo("a")]), pad: "x".repeat(2 * 1024 * 1024) });
    expect(big.length).toBeGreaterThan(MAX_SPEC_BYTES);
    await rejects(file(big), /limit|over|bytes/);
  });

  it("a binary file is refused", async () => {
    await rejects(file(Buffer.from([0x7b, 0x00, 0x01, 0x02, 0xff, 0xfe, 0x7d])), /binary/);
  });

  it("invalid UTF-8 is refused", async () => {
    await rejects(file(Buffer.from([0x7b, 0xc3, 0x28, 0x7d])), /UTF-8/);
  });

  it("a symlink to /dev/zero fails without hanging", async () => {
    const link = path.join(dir, "zero.yaml");
    fs.symlinkSync("/dev/zero", link);
    await rejects(link, /not a regular file/);
  });

  it("a FIFO fails without hanging", async () => {
    const fifo = path.join(dir, "pipe.json");
    execFileSync("mkfifo", [fifo]);
    await rejects(fifo, /not a regular file/);
  });

  it("a directory fails", async () => {
    const d = path.join(dir, "adir.json");
    fs.mkdirSync(d);
    await rejects(d, /not a regular file|EISDIR/);
  });
});
