import { describe, it, expect } from "vitest";
import { createHash } from "node:crypto";
import { MockSandbox } from "../../src/sandbox/mock.js";
import { AGENT_PROGRAM, MOCK_AGENT_ENV } from "../../src/sandbox/agent.js";

async function exec(sb: MockSandbox, program: string, args: string[] = [], stdin: string | Buffer = "", env: Record<string, string> = {}, signal = new AbortController().signal) {
  const vm = await sb.open({ runId: "r", stage: "s", attempt: 1, memoryMb: 512, vcpus: 1, network: false, signal });
  expect(vm.vm).toBeUndefined(); // the mock spawns no VM
  try {
    const r = await vm.exec({ program, args, env, stdin: Buffer.isBuffer(stdin) ? stdin : Buffer.from(stdin), signal });
    return { code: r.exitCode, out: r.stdout.toString("utf8"), err: r.stderr.toString("utf8"), raw: r.stdout, vm };
  } finally {
    await vm.stop(0);
  }
}

describe("mock sandbox programs", () => {
  it("echo, echo -n, and /bin/echo", async () => {
    const sb = new MockSandbox();
    expect(await exec(sb, "echo", ["hello", "world"])).toMatchObject({ code: 0, out: "hello world\n", err: "" });
    expect((await exec(sb, "echo", ["-n", "x"])).out).toBe("x");
    expect((await exec(sb, "echo")).out).toBe("\n");
    expect((await exec(sb, "/bin/echo", ["p"])).out).toBe("p\n");
  });

  it("true / false", async () => {
    const sb = new MockSandbox();
    expect((await exec(sb, "true")).code).toBe(0);
    expect((await exec(sb, "false")).code).toBe(1);
  });

  it("cat copies stdin byte for byte, and reads files written earlier in the run", async () => {
    const sb = new MockSandbox();
    const bin = Buffer.from([0, 1, 2, 255, 254, 10]);
    const r = await exec(sb, "cat", [], bin);
    expect(r.code).toBe(0);
    expect(r.raw.equals(bin)).toBe(true);
    expect((await exec(sb, "sh", ["-c", "echo stored > /workspace/f.txt"])).code).toBe(0);
    expect(await exec(sb, "cat", ["/workspace/f.txt"])).toMatchObject({ code: 0, out: "stored\n" });
    expect((await exec(sb, "cat", ["f.txt"])).out).toBe("stored\n"); // relative to /workspace
    expect((await exec(sb, "cat", ["f.txt", "-"], "in\n")).out).toBe("stored\nin\n");
    const missing = await exec(sb, "cat", ["/workspace/nope"]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/No such file/);
  });

  it("files are per run (per sandbox instance)", async () => {
    const a = new MockSandbox();
    const b = new MockSandbox();
    await exec(a, "sh", ["-c", "echo x > only-a"]);
    expect((await exec(a, "test", ["-e", "only-a"])).code).toBe(0);
    expect((await exec(b, "test", ["-e", "only-a"])).code).toBe(1);
  });

  it("tr a-z A-Z", async () => {
    const sb = new MockSandbox();
    expect(await exec(sb, "tr", ["a-z", "A-Z"], "hello, World 42\n")).toMatchObject({ code: 0, out: "HELLO, WORLD 42\n" });
    expect((await exec(sb, "tr", ["abc", "xyz"], "aabbcc")).out).toBe("xxyyzz");
  });

  it("test -e / -f / -d", async () => {
    const sb = new MockSandbox();
    expect((await exec(sb, "test", ["-e", "/workspace/x"])).code).toBe(1);
    await exec(sb, "sh", ["-c", "echo hi > /workspace/x"]);
    expect((await exec(sb, "test", ["-e", "/workspace/x"])).code).toBe(0);
    expect((await exec(sb, "test", ["-f", "x"])).code).toBe(0);
    expect((await exec(sb, "test", ["-d", "/workspace"])).code).toBe(0);
    expect((await exec(sb, "[", ["-e", "x", "]"])).code).toBe(0);
  });

  it("sha256sum of stdin matches node:crypto, and of a file", async () => {
    const sb = new MockSandbox();
    const data = Buffer.from("the quick brown fox\n\u00e9\u0000\u00ff");
    const want = createHash("sha256").update(data).digest("hex");
    const r = await exec(sb, "sha256sum", [], data);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${want}  -\n`);
    await exec(sb, "sh", ["-c", "echo abc > /workspace/h"]);
    const f = await exec(sb, "sha256sum", ["/workspace/h"]);
    expect(f.out).toBe(`${createHash("sha256").update("abc\n").digest("hex")}  /workspace/h\n`);
  });

  it("sh -c: heredoc into a file, then cat it", async () => {
    const sb = new MockSandbox();
    const script = ["cat > /workspace/result.json <<EOF", '{"status": "ok",', ' "n": 1}', "EOF", "cat /workspace/result.json"].join("\n");
    const r = await exec(sb, "sh", ["-c", script]);
    expect(r.code).toBe(0);
    expect(r.out).toBe('{"status": "ok",\n "n": 1}\n');
    expect(JSON.parse(r.out)).toEqual({ status: "ok", n: 1 });
    const vm = await sb.open({ runId: "r", stage: "s2", attempt: 1, memoryMb: 512, vcpus: 1, network: false, signal: new AbortController().signal });
    expect((await vm.readFile("result.json", 1024))!.toString()).toBe('{"status": "ok",\n "n": 1}\n');
    await expect(vm.readFile("result.json", 3)).rejects.toThrow(/limit/);
    await expect(vm.readFile("../etc/passwd", 1024)).rejects.toThrow(/unsafe/);
    expect(await vm.readFile("missing", 1024)).toBeNull();
  });

  it("sh -c: ; and && lists, > and >>, exit, quotes", async () => {
    const sb = new MockSandbox();
    expect((await exec(sb, "sh", ["-c", "echo a; echo b && echo c"])).out).toBe("a\nb\nc\n");
    expect(await exec(sb, "sh", ["-c", "false && echo never"])).toMatchObject({ code: 1, out: "" });
    expect((await exec(sb, "sh", ["-c", "echo 'x; y'"])).out).toBe("x; y\n");
    expect((await exec(sb, "sh", ["-c", "echo one > f; echo two >> f; cat f"])).out).toBe("one\ntwo\n");
    expect(await exec(sb, "sh", ["-c", "echo before; exit 7; echo after"])).toMatchObject({ code: 7, out: "before\n" });
    expect((await exec(sb, "sh", ["-lc", "echo login"])).out).toBe("login\n");
    expect((await exec(sb, "sh", ["-c", "tr a-z A-Z"], "piped\n")).out).toBe("PIPED\n");
    expect((await exec(sb, "sh", ["-c", "echo 'unterminated"])).code).toBe(2);
    expect((await exec(sb, "sh", ["script.sh"])).code).toBe(2);
  });

  it("sh -c: stdin goes to the first command that reads it, wherever it is in the script", async () => {
    const sb = new MockSandbox();
    expect((await exec(sb, "sh", ["-c", "# upper-case the input\ntr a-z A-Z"], "hi\n")).out).toBe("HI\n");
    expect((await exec(sb, "sh", ["-c", "\ntr a-z A-Z"], "hi\n")).out).toBe("HI\n");
    expect((await exec(sb, "sh", ["-c", "echo start && tr a-z A-Z"], "hi\n")).out).toBe("start\nHI\n");
    expect((await exec(sb, "sh", ["-c", "cat; cat"], "once\n")).out).toBe("once\n"); // consumed by the first reader
    expect((await exec(sb, "sh", ["-c", "cat > in.txt\nsha256sum in.txt"], "x")).out).toBe(`${createHash("sha256").update("x").digest("hex")}  in.txt\n`);
  });

  it("an unknown program exits 127 with a clear stderr", async () => {
    const sb = new MockSandbox();
    const r = await exec(sb, "python3", ["-c", "print(1)"]);
    expect(r.code).toBe(127);
    expect(r.out).toBe("");
    expect(r.err).toMatch(/python3/);
    expect(r.err).toMatch(/not simulated/);
    const inScript = await exec(sb, "sh", ["-c", "curl http://x"]);
    expect(inScript.code).toBe(127);
    expect(inScript.err).toMatch(/curl/);
  });

  it("sleep really waits, rejects bad intervals, and stops on abort", async () => {
    const sb = new MockSandbox();
    expect((await exec(sb, "sleep", ["0.05"])).code).toBe(0);
    expect((await exec(sb, "sleep", ["soon"])).code).toBe(1);
    const ac = new AbortController();
    const p = exec(sb, "sleep", ["300"], "", {}, ac.signal);
    setTimeout(() => ac.abort(), 50);
    const r = await p; // bounded by the test timeout
    expect(r.code).not.toBe(0);
  });

  it("a stopped stage runs nothing", async () => {
    const sb = new MockSandbox();
    const signal = new AbortController().signal;
    const vm = await sb.open({ runId: "r", stage: "s", attempt: 1, memoryMb: 512, vcpus: 1, network: false, signal });
    expect(await vm.stop(0)).toEqual({ exitCode: 0, signal: null, killed: false });
    const r = await vm.exec({ program: "echo", args: ["x"], env: {}, stdin: Buffer.alloc(0), signal });
    expect(r.exitCode).not.toBe(0);
  });

  it("claude-code answers [mock] <prompt> and writes result.json/artifacts only when asked", async () => {
    const sb = new MockSandbox();
    const plain = await exec(sb, AGENT_PROGRAM, ["--print", "summarise"]);
    expect(plain).toMatchObject({ code: 0, out: "[mock] summarise\n" });
    expect((await exec(sb, "test", ["-e", "result.json"])).code).toBe(1);

    const mock = { result_json: { status: "ok" }, artifacts: { "a.txt": "A" }, exit_code: 0 };
    const r = await exec(sb, AGENT_PROGRAM, ["--print", "go"], "", { [MOCK_AGENT_ENV]: JSON.stringify(mock) });
    expect(r.out).toBe("[mock] go\n");
    expect((await exec(sb, "cat", ["result.json"])).out).toBe('{"status":"ok"}');
    expect((await exec(sb, "cat", ["a.txt"])).out).toBe("A");

    const raw = await exec(sb, AGENT_PROGRAM, ["--print", "x"], "", { [MOCK_AGENT_ENV]: JSON.stringify({ result_json: "{broken", exit_code: 5 }) });
    expect(raw.code).toBe(5);
    expect((await exec(sb, "cat", ["result.json"])).out).toBe("{broken");
  });
});
