/**
 * Agent boxes with a provider, without a VM: the spec's provider block (bad blocks name
 * the field), where the guest reaches the provider, the key's sources, and what the
 * engine does with a micro-VM-kind sandbox (a recording fake): a missing key fails the
 * stage before any VM is opened; otherwise the VM gets the egress, the EXEC alone gets
 * the key, and the boxes' token counts and cost are summed into the report. The mock
 * sandbox keeps simulating the agent as before.
 */
import { describe, it, expect } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { runEngine } from "../../src/engine/index.js";
import { DEFAULT_POLICY, type EngineEvent } from "../../src/engine/types.js";
import { DEFAULT_LIMITS } from "../../src/limits.js";
import { MockSandbox } from "../../src/sandbox/mock.js";
import { EGRESS_GUEST_IP, providerEndpoint } from "../../src/spec/provider.js";
import { egressArgs } from "../../src/sandbox/qemu/network.js";
import { parseSecrets, readSecret } from "../../src/sandbox/secrets.js";
import type { ExecCommand, Sandbox, StageVm, StageVmOptions } from "../../src/sandbox/types.js";
import { parseInlineSpec } from "../../src/spec/load.js";
import type { RunSpec } from "../../src/spec/types.js";
import { tmpDir } from "../helpers/daemon.js";
import { inlineSpecError } from "../helpers/specs.js";

const KEY = "sk-unit-4b8e2f0a9d1c7e3b";


const agentSpec = (agent: Record<string, unknown>, sandbox: Record<string, unknown> = { mode: "local" }) => ({ api_version: "v1", kind: "agent", name: "a", sandbox, agent: { prompt: "hi", ...agent } });

describe("spec: provider blocks", () => {
  it("accepts a provider on the agent and on pipeline boxes, with a command", () => {
    const a = parseInlineSpec(agentSpec({ provider: { kind: "anthropic", model: "claude-sonnet-4-5" }, command: ["claude", "--print"] })).spec;
    expect(a.agent?.provider).toEqual({ kind: "anthropic", model: "claude-sonnet-4-5" });
    const p = parseInlineSpec({
      api_version: "v1",
      kind: "pipeline",
      name: "p",
      pipeline: { boxes: [{ name: "b", prompt: "x", provider: { kind: "ollama", model: "llama3.2", base_url: "http://127.0.0.1:11434/v1" } }], stages: [{ type: "box", name: "b" }] },
    }).spec;
    expect(p.pipeline?.boxes[0].provider?.kind).toBe("ollama");
  });

  it("bad blocks are refused naming the field", () => {
    expect(inlineSpecError(agentSpec({ provider: { kind: "gemini", model: "m" } }))).toMatch(/agent\/provider\/kind: must be one of anthropic, openai, ollama/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai" } }))).toMatch(/agent\/provider\/model: is required/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai", model: "m", key: "sk-1" } }))).toMatch(/agent\/provider\/key: unknown property/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai", model: "m", base_url: "ftp://x" } }))).toMatch(/agent\/provider\/base_url/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai", model: "m", base_url: "https://u:p@api.example.com/v1" } }))).toMatch(/agent\/provider\/base_url: must not carry credentials/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai", model: "m", base_url: "https://api.example.com/v1?x=1" } }))).toMatch(/agent\/provider\/base_url: must not have a query/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai", model: "m", api_key_env: "1BAD" } }))).toMatch(/agent\/provider\/api_key_env/);
    expect(inlineSpecError(agentSpec({ provider: { kind: "openai", model: "m", pricing: { input_usd_per_mtok: -1, output_usd_per_mtok: 1 } } }))).toMatch(/agent\/provider\/pricing\/input_usd_per_mtok/);
    expect(inlineSpecError(agentSpec({ command: [] }))).toMatch(/agent\/command/);
    const box = { name: "b", prompt: "x", provider: { kind: "openai", model: "m", base_url: "https://a:b@h/v1" } };
    expect(inlineSpecError({ api_version: "v1", kind: "pipeline", name: "p", pipeline: { boxes: [box], stages: [{ type: "box", name: "b" }] } })).toMatch(/pipeline\/boxes\/0\/provider\/base_url/);
  });
});

describe("provider endpoints and keys", () => {
  it("a host name keeps the URL (mapped to the forward address in /etc/hosts); an address or localhost is replaced", () => {
    expect(providerEndpoint({ kind: "anthropic", model: "m" }, "f")).toEqual({ host: "api.anthropic.com", port: 443, guestBaseUrl: "https://api.anthropic.com", hostsLine: `${EGRESS_GUEST_IP} api.anthropic.com` });
    expect(providerEndpoint({ kind: "openai", model: "m" }, "f")).toMatchObject({ host: "api.openai.com", port: 443, guestBaseUrl: "https://api.openai.com/v1" });
    expect(providerEndpoint({ kind: "ollama", model: "m" }, "f")).toEqual({ host: "127.0.0.1", port: 11434, guestBaseUrl: `http://${EGRESS_GUEST_IP}:11434/v1` });
    expect(providerEndpoint({ kind: "openai", model: "m", base_url: "http://localhost/v1/" }, "f")).toEqual({ host: "localhost", port: 80, guestBaseUrl: `http://${EGRESS_GUEST_IP}/v1` });
    expect(providerEndpoint({ kind: "openai", model: "m", base_url: "http://[::1]:8080/v1" }, "f")).toMatchObject({ host: "::1", port: 8080 });
  });

  it("the egress network: restrict=on and one guestfwd to a relay of the resolved address", () => {
    const a = egressArgs({ guestIp: EGRESS_GUEST_IP, guestPort: 443, host: "203.0.113.7", port: 443 }, "/usr/bin/node");
    expect(a.kernel).toEqual(["voidbox.net=1"]);
    expect(a.qemu[0]).toBe("-netdev");
    expect(a.qemu[1]).toMatch(new RegExp(`^user,id=vbxnet,restrict=on,guestfwd=tcp:10\\.0\\.2\\.100:443-cmd:/usr/bin/node \\S+\\.cjs 203\\.0\\.113\\.7 443$`));
    const relay = a.qemu[1].split(" ")[1];
    expect(fs.statSync(path.dirname(relay)).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(relay, "utf8")).toContain("net.connect");
    expect(() => egressArgs({ guestIp: EGRESS_GUEST_IP, guestPort: 443, host: "1.2.3.4", port: 443 }, "/opt/my node/bin/node")).toThrow(/guestfwd/);
    // This process's relay directory goes with the process; a test worker may not see 'exit'.
    fs.rmSync(path.dirname(relay), { recursive: true, force: true });
  });

  it("secrets: the operator's file (0600) first, then the environment", () => {
    expect(parseSecrets("# keys\nexport A=1\nB = 'two'\nC=\"3\"\nnot a line\n")).toEqual(new Map([["A", "1"], ["B", "two"], ["C", "3"]]));
    const dir = tmpDir("vbx-secrets-");
    const file = path.join(dir, "secrets");
    fs.writeFileSync(file, `ANTHROPIC_API_KEY=${KEY}\n`, { mode: 0o600 });
    expect(readSecret("ANTHROPIC_API_KEY", file, { ANTHROPIC_API_KEY: "from-env" })).toBe(KEY);
    expect(readSecret("OPENAI_API_KEY", file, { OPENAI_API_KEY: "from-env" })).toBe("from-env");
    expect(readSecret("OPENAI_API_KEY", undefined, {})).toBeUndefined();
    fs.chmodSync(file, 0o644);
    expect(() => readSecret("ANTHROPIC_API_KEY", file, {})).toThrow(/readable by group or others \(mode 644\)/);
    expect(() => readSecret("X", path.join(dir, "missing"), {})).toThrow(/cannot be read: ENOENT/);
  });
});

/** A micro-VM-kind sandbox that runs nothing: records opens and EXECs, answers like the agent would. */
class RecordingSandbox implements Sandbox {
  readonly kind = "qemu" as const;
  opens: StageVmOptions[] = [];
  execs: ExecCommand[] = [];
  constructor(private readonly usage: Record<string, { input: number; output: number; cost: number }> = {}) {}
  async open(o: StageVmOptions): Promise<StageVm> {
    this.opens.push(o);
    const files = new Map<string, Buffer>();
    return {
      vm: { accelerator: "tcg", pid: 1, bootMs: 1 },
      exec: async (cmd) => {
        this.execs.push(cmd);
        const u = this.usage[o.stage] ?? { input: 1, output: 1, cost: 0 };
        files.set("result.json", Buffer.from(JSON.stringify({ status: "succeeded", metrics: { input_tokens: u.input, output_tokens: u.output, total_cost_usd: u.cost } })));
        return { exitCode: 0, stdout: Buffer.from(`answer of ${o.stage}\n`), stderr: Buffer.alloc(0) };
      },
      readFile: async (rel) => files.get(rel) ?? null,
      stop: async () => ({ exitCode: 0, signal: null, killed: false }),
    };
  }
}

function engine(spec: RunSpec, sandbox: Sandbox, secretsFile?: string) {
  const events: EngineEvent[] = [];
  const outputs: string[] = [];
  const promise = runEngine({
    runId: "r1",
    spec,
    policy: { ...DEFAULT_POLICY, max_stage_retries: 0 },
    sandbox,
    signal: new AbortController().signal,
    hooks: { event: (e) => void events.push(e), planStages: () => {}, stage: () => {}, vmDelta: () => {}, output: (s, r) => void outputs.push(`${s}:${r.toString()}`) },
    now: Date.now,
    limits: { ...DEFAULT_LIMITS, providerSecretsFile: secretsFile },
  });
  return { events, outputs, promise };
}

const SANDBOX = { mode: "local" as const, memory_mb: 256, vcpus: 1, network: false, env: {} };

describe("engine: agent boxes with a provider", () => {
  it("a missing key fails the stage naming the variable, before any VM is opened", async () => {
    const sb = new RecordingSandbox();
    // A secrets file without the key: the message names both places it looked.
    const dir = tmpDir("vbx-nokey-");
    const file = path.join(dir, "secrets");
    fs.writeFileSync(file, "OTHER=1\n", { mode: 0o600 });
    const spec: RunSpec = { api_version: "v1", kind: "agent", name: "a", sandbox: SANDBOX, agent: { prompt: "hi", provider: { kind: "anthropic", model: "m", api_key_env: "VBX_UNIT_NEVER_SET_KEY" } } };
    const { events, promise } = engine(spec, sb, file);
    const r = await promise;
    expect(r.exitCode).not.toBe(0);
    expect(sb.opens).toHaveLength(0);
    expect(events.some((e) => e.type === "microvm.spawned")).toBe(false);
    const failed = events.find((e) => e.type === "stage.failed")!;
    expect(failed.message).toMatch(/no API key: VBX_UNIT_NEVER_SET_KEY is not set in the daemon's environment nor in the secrets file/);
  });

  it("the VM gets the egress, the EXEC alone gets the key; events and outputs never carry it", async () => {
    const sb = new RecordingSandbox({ main: { input: 100, output: 20, cost: 0.5 } });
    const dir = tmpDir("vbx-key-");
    const file = path.join(dir, "secrets");
    fs.writeFileSync(file, `ANTHROPIC_API_KEY=${KEY}\n`, { mode: 0o600 });
    const spec: RunSpec = {
      api_version: "v1",
      kind: "agent",
      name: "a",
      sandbox: { ...SANDBOX, network: true, env: { TEAM: "x" } },
      agent: { prompt: "summarise", skills: ["lint"], provider: { kind: "anthropic", model: "claude-x", base_url: "http://127.0.0.1:8089" } },
    };
    const { events, outputs, promise } = engine(spec, sb, file);
    const r = await promise;
    expect(r.exitCode).toBe(0);
    expect(sb.opens[0].egress).toEqual({ guestIp: EGRESS_GUEST_IP, guestPort: 8089, host: "127.0.0.1", port: 8089 });
    const exec = sb.execs[0];
    expect(exec.program).toBe("sh");
    expect(exec.args.slice(2)).toEqual(["voidbox-agent", "summarise"]);
    expect(exec.env).toMatchObject({
      TEAM: "x",
      ANTHROPIC_API_KEY: KEY,
      VOIDBOX_PROVIDER_KIND: "anthropic",
      VOIDBOX_PROVIDER_MODEL: "claude-x",
      VOIDBOX_PROVIDER_BASE_URL: `http://${EGRESS_GUEST_IP}:8089`,
      VOIDBOX_PROVIDER_KEY_ENV: "ANTHROPIC_API_KEY",
      VOIDBOX_SKILLS: '["lint"]',
      VOIDBOX_OUTPUT_FILE: "/workspace/result.json",
    });
    expect(exec.env.VOIDBOX_PROVIDER_HOSTS).toBeUndefined();
    expect(JSON.stringify(events) + outputs.join("")).not.toContain(KEY);
    expect(r.report).toMatchObject({ success: true, output: "answer of main\n", input_tokens: 100, output_tokens: 20, total_cost_usd: 0.5 });
  });

  it("a pipeline sums its boxes' tokens and cost; a box without a provider runs its command with no egress", async () => {
    const sb = new RecordingSandbox({ plan: { input: 10, output: 5, cost: 0.1 }, review: { input: 7, output: 3, cost: 0.2 }, lint: { input: 1, output: 1, cost: 0 } });
    const provider = { kind: "ollama" as const, model: "llama3.2" };
    const spec: RunSpec = {
      api_version: "v1",
      kind: "pipeline",
      name: "p",
      sandbox: SANDBOX,
      pipeline: {
        boxes: [
          { name: "plan", prompt: "p", provider },
          { name: "review", prompt: "r", provider: { ...provider, base_url: "https://models.invalid:8443/v1" } },
          { name: "lint", prompt: "l", command: ["my-linter", "--fix"] },
        ],
        stages: [{ type: "box", name: "plan" }, { type: "fan_out", boxes: ["review", "lint"] }],
      },
    };
    const { promise } = engine(spec, sb);
    // models.invalid never resolves (RFC 6761): that box fails with a clear reason, the others run.
    const r = await promise;
    const review = sb.opens.find((o) => o.stage === "review");
    expect(review).toBeUndefined();
    expect(r.error).toMatch(/box review failed: provider host models\.invalid cannot be resolved on the daemon host/);
    const lint = sb.execs.find((e) => e.program === "my-linter")!;
    expect(lint.args).toEqual(["--fix", "l"]);
    expect(sb.opens.find((o) => o.stage === "lint")!.egress).toBeUndefined();
    expect(sb.execs.find((e) => e.env.VOIDBOX_PROVIDER_MODEL === "llama3.2")!.env).not.toHaveProperty("OLLAMA_API_KEY");
    expect(r.report).toMatchObject({ input_tokens: 11, output_tokens: 6, total_cost_usd: 0.1 });
  });

  it("the mock sandbox simulates the agent as before: no key needed, no VM", async () => {
    const spec: RunSpec = { api_version: "v1", kind: "agent", name: "a", sandbox: { ...SANDBOX, mode: "mock" }, agent: { prompt: "hi", provider: { kind: "anthropic", model: "m", api_key_env: "VBX_UNIT_NEVER_SET_KEY" }, mock: { result_json: { status: "ok", metrics: { input_tokens: 3, output_tokens: 4, total_cost_usd: 0.01 } } } } };
    const { promise } = engine(spec, new MockSandbox());
    const r = await promise;
    expect(r.report).toMatchObject({ success: true, output: "[mock] hi\n", input_tokens: 3, output_tokens: 4, total_cost_usd: 0.01 });
  });
});
