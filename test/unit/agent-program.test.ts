/**
 * The built-in agent program (guest/agent/voidbox-agent) run on the host against the fake
 * provider: request and reply mapping for Anthropic Messages and OpenAI chat completions,
 * result file and artifact, token counts and cost, and clear failures (HTTP errors,
 * timeouts, missing settings) that never show the key.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fakeAnswer, startFakeProvider, type FakeProvider } from "../helpers/fake-provider.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const AGENT = path.join(root, "guest/agent/voidbox-agent");
const python = spawnSync("python3", ["--version"], { stdio: "ignore" }).status === 0 ? "python3" : null;
if (!python) console.warn("[test/unit/agent-program] skipped: python3 is not on PATH");

const KEY = "sk-test-7f3a9c1e5b2d4a6f8e0c";

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  result: Record<string, unknown> | null;
  dir: string;
}

describe.skipIf(!python)("voidbox-agent (the built-in agent program)", () => {
  let fake: FakeProvider;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-agent-prog-"));
  let n = 0;

  beforeAll(async () => {
    fake = await startFakeProvider({ key: KEY });
  });
  afterAll(async () => {
    await fake.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function run(env: Record<string, string>, args: string[], stdin = "", timeoutMs = 20_000): Promise<Ran> {
    const dir = path.join(tmp, `w${n++}`);
    fs.mkdirSync(dir);
    const out = env.VOIDBOX_OUTPUT_FILE ?? path.join(dir, "result.json");
    return new Promise((resolve, reject) => {
      const child = spawn(python!, [AGENT, ...args], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", VOIDBOX_OUTPUT_FILE: out, ...env },
        stdio: ["pipe", "pipe", "pipe"],
      });
      const so: Buffer[] = [];
      const se: Buffer[] = [];
      child.stdout.on("data", (b: Buffer) => so.push(b));
      child.stderr.on("data", (b: Buffer) => se.push(b));
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`voidbox-agent did not exit within ${timeoutMs} ms`));
      }, timeoutMs);
      child.on("error", reject);
      child.on("close", (code) => {
        clearTimeout(timer);
        const result = fs.existsSync(out) ? (JSON.parse(fs.readFileSync(out, "utf8")) as Record<string, unknown>) : null;
        resolve({ code, stdout: Buffer.concat(so).toString(), stderr: Buffer.concat(se).toString(), result, dir });
      });
      child.stdin.end(stdin);
    });
  }
  const anthropic = (model = "claude-3-5-haiku-latest", extra: Record<string, string> = {}) => ({
    VOIDBOX_PROVIDER_KIND: "anthropic",
    VOIDBOX_PROVIDER_MODEL: model,
    VOIDBOX_PROVIDER_BASE_URL: fake.url,
    VOIDBOX_PROVIDER_KEY_ENV: "ANTHROPIC_API_KEY",
    ANTHROPIC_API_KEY: KEY,
    ...extra,
  });
  const openai = (model = "gpt-4o-mini", extra: Record<string, string> = {}) => ({
    VOIDBOX_PROVIDER_KIND: "openai",
    VOIDBOX_PROVIDER_MODEL: model,
    VOIDBOX_PROVIDER_BASE_URL: `${fake.url}/v1`,
    VOIDBOX_PROVIDER_KEY_ENV: "OPENAI_API_KEY",
    OPENAI_API_KEY: KEY,
    ...extra,
  });

  it("Anthropic: sends a Messages request, prints the answer, writes result.json with tokens and cost, and answer.md", async () => {
    const before = fake.requests.length;
    const r = await run(anthropic("claude-3-5-haiku-latest", { VOIDBOX_SKILLS: JSON.stringify(["agent:claude-code", "lint"]) }), ["--print", "summarise the repo"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${fakeAnswer("anthropic", "summarise the repo")}\n`);
    const req = fake.requests[before];
    expect(req.path).toBe("/v1/messages");
    expect(req.headers["x-api-key"]).toBe(KEY);
    expect(req.headers["anthropic-version"]).toBe("2023-06-01");
    expect(req.body).toMatchObject({ model: "claude-3-5-haiku-latest", max_tokens: 4096, messages: [{ role: "user", content: "summarise the repo" }] });
    expect(req.body.system).toContain("agent:claude-code, lint");
    // claude-3-5-haiku: 0.8 / 4 USD per million tokens; the fake reports 1200 in, 345 out.
    expect(r.result).toMatchObject({
      status: "succeeded",
      answer: fakeAnswer("anthropic", "summarise the repo"),
      provider: "anthropic",
      metrics: { input_tokens: 1200, output_tokens: 345, total_cost_usd: 0.00234 },
      artifacts: [{ name: "answer.md", path: path.join(r.dir, "answer.md"), media_type: "text/markdown" }],
    });
    expect(fs.readFileSync(path.join(r.dir, "answer.md"), "utf8")).toBe(fakeAnswer("anthropic", "summarise the repo"));
  });

  it("OpenAI chat completions, with the run's input on stdin and the spec's pricing", async () => {
    const before = fake.requests.length;
    const r = await run(openai("my-model", { VOIDBOX_PROVIDER_PRICING: JSON.stringify({ input_usd_per_mtok: 10, output_usd_per_mtok: 20 }) }), ["review this"], "diff --git a b\n");
    expect(r.code).toBe(0);
    const req = fake.requests[before];
    expect(req.path).toBe("/v1/chat/completions");
    expect(req.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(req.body.messages).toEqual([{ role: "user", content: "review this\n\n<input>\ndiff --git a b\n\n</input>" }]);
    expect(r.stdout).toBe(`${fakeAnswer("openai", "review this\n\n<input>\ndiff --git a b\n\n</input>")}\n`);
    expect(r.result).toMatchObject({ status: "succeeded", metrics: { input_tokens: 1200, output_tokens: 345, total_cost_usd: 0.0189 } });
  });

  it("ollama (OpenAI-compatible) needs no key and costs nothing", async () => {
    const before = fake.requests.length;
    const r = await run({ VOIDBOX_PROVIDER_KIND: "ollama", VOIDBOX_PROVIDER_MODEL: "llama3.2", VOIDBOX_PROVIDER_BASE_URL: `${fake.url}/v1` }, ["hi"]);
    // The fake wants the key; without one it answers 401, which the agent reports.
    expect(fake.requests[before].headers.authorization).toBeUndefined();
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^voidbox-agent: provider ollama \(llama3\.2\): HTTP 401: invalid x-api-key\n$/);
    const open = await startFakeProvider();
    try {
      const ok = await run({ VOIDBOX_PROVIDER_KIND: "ollama", VOIDBOX_PROVIDER_MODEL: "llama3.2", VOIDBOX_PROVIDER_BASE_URL: `${open.url}/v1` }, ["hi"]);
      expect(ok.code).toBe(0);
      expect(ok.result).toMatchObject({ metrics: { input_tokens: 1200, output_tokens: 345, total_cost_usd: 0 } });
    } finally {
      await open.close();
    }
  });

  it("HTTP errors exit 3 with the provider's message, write a failed result, and never show the key", async () => {
    for (const [env, status] of [
      [anthropic("error-529"), 529],
      [openai("error-400"), 400],
    ] as const) {
      const r = await run(env, ["x"]);
      expect(r.code).toBe(3);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(`HTTP ${status}: fake provider failure ${status}`);
      expect(r.result).toMatchObject({ status: "failed" });
      expect(r.stderr + JSON.stringify(r.result)).not.toContain(KEY);
    }
    const wrongKey = await run(anthropic(undefined, { ANTHROPIC_API_KEY: "sk-wrong" }), ["x"]);
    expect(wrongKey.code).toBe(3);
    expect(wrongKey.stderr).toContain("HTTP 401");
  });

  it("a provider slower than its timeout, or unreachable, exits 4 with a clear line", async () => {
    const slow = await run(anthropic("slow-5000", { VOIDBOX_PROVIDER_TIMEOUT_SECS: "1" }), ["x"]);
    expect(slow.code).toBe(4);
    expect(slow.stderr).toMatch(/no answer within 1 s/);
    const closed = await run(openai("gpt-4o", { VOIDBOX_PROVIDER_BASE_URL: "http://127.0.0.1:9/v1" }), ["x"]);
    expect(closed.code).toBe(4);
    expect(closed.stderr).toMatch(/cannot reach http:\/\/127\.0\.0\.1:9\/v1\/chat\/completions/);
  });

  it("refuses to run without its settings or key, naming what is missing", async () => {
    const none = await run({}, ["x"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no provider configured/);
    const noKey = await run(anthropic(undefined, { ANTHROPIC_API_KEY: "" }), ["x"]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toBe("voidbox-agent: ANTHROPIC_API_KEY is not set\n");
    const usage = await run(anthropic(), []);
    expect(usage.code).toBe(2);
  });

  it("honours the output file: result and answer.md go where VOIDBOX_OUTPUT_FILE says", async () => {
    const dir = path.join(tmp, "custom");
    const r = await run(anthropic(undefined, { VOIDBOX_OUTPUT_FILE: path.join(dir, "out", "report.json") }), ["x"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "out", "report.json"), "utf8"))).toMatchObject({ status: "succeeded" });
    expect(fs.existsSync(path.join(dir, "out", "answer.md"))).toBe(true);
  });
});
