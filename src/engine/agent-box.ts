/**
 * How one agent box (the agent of `kind: agent`, or a pipeline box) becomes a stage.
 *
 * In the mock sandbox: the simulated agent, exactly as before providers existed. In a
 * micro-VM: the box's `command` (default with a provider: the built-in `voidbox-agent`
 * of images/agent.yaml) with the prompt as its last argument. A box with a provider
 * gets a VM whose network reaches the provider only (src/sandbox/provider.ts), the
 * provider's settings in its environment, and its API key added to the EXEC alone.
 */
import { AGENT_PROGRAM, BUILTIN_AGENT, MOCK_AGENT_ENV, OUTPUT_FILE_ENV } from "../sandbox/agent.js";
import { providerSandbox } from "../sandbox/provider.js";
import { keyEnvOf, providerEndpoint } from "../spec/provider.js";
import { agentResultPath } from "../spec/plan.js";
import type { MockAgentSpec, ProviderSpec, RunSpec } from "../spec/types.js";
import type { StageContext, StageJob } from "./stage.js";
import type { EngineHooks, RunReport } from "./types.js";

export interface AgentBox {
  prompt: string;
  timeout_secs?: number;
  mock?: MockAgentSpec;
  output_file?: string;
  skills?: string[];
  provider?: ProviderSpec;
  command?: string[];
}

/**
 * Runs before the agent program in the guest: maps the provider's host name to the
 * forward address (so TLS still checks that name), and says clearly when the image
 * lacks the program (exit 126: found nothing to execute).
 */
const GUEST_WRAPPER = [
  'if [ -n "$VOIDBOX_PROVIDER_HOSTS" ]; then printf "%s\\n" "$VOIDBOX_PROVIDER_HOSTS" >> /etc/hosts || exit 126; fi',
  'command -v "$0" >/dev/null 2>&1 || { echo "agent program $0 is not in this guest (use sandbox.image: agent, built from images/agent.yaml, or an image that has it)" >&2; exit 126; }',
  'exec "$0" "$@"',
].join("\n");

/** Debian's default PATH: the guest's own lacks /usr/local/bin. */
const AGENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Token counts and cost an agent reported in its result file (`metrics`). */
export type Usage = Pick<RunReport, "input_tokens" | "output_tokens" | "total_cost_usd">;

const count = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0);

function usageOf(resultJson: Buffer): Usage {
  try {
    const m = (JSON.parse(resultJson.toString("utf8")) as { metrics?: Record<string, unknown> })?.metrics;
    if (!m || typeof m !== "object") return { input_tokens: 0, output_tokens: 0, total_cost_usd: 0 };
    return { input_tokens: Math.floor(count(m.input_tokens)), output_tokens: Math.floor(count(m.output_tokens)), total_cost_usd: count(m.total_cost_usd) };
  } catch {
    return { input_tokens: 0, output_tokens: 0, total_cost_usd: 0 };
  }
}

/** Usage per stage (the last attempt's result counts), summed for the run report. */
export class UsageTally {
  private readonly byStage = new Map<string, Usage>();
  record(stage: string, resultJson: Buffer): void {
    this.byStage.set(stage, usageOf(resultJson));
  }
  total(): Usage {
    const t = { input_tokens: 0, output_tokens: 0, total_cost_usd: 0 };
    for (const u of this.byStage.values()) {
      t.input_tokens += u.input_tokens;
      t.output_tokens += u.output_tokens;
      t.total_cost_usd += u.total_cost_usd;
    }
    // Sums of float prices: keep the report free of binary noise (1e-9 USD is far below any price).
    t.total_cost_usd = Math.round(t.total_cost_usd * 1e9) / 1e9;
    return t;
  }
}

/** The context and job of one agent box's stage. */
export function agentStage(
  ctx: StageContext,
  spec: RunSpec,
  name: string,
  box: AgentBox,
  stdin: Buffer,
  tally: UsageTally,
  group?: string,
): { ctx: StageContext; job: StageJob } {
  const resultPath = box.output_file ? agentResultPath(box.output_file) : "result.json";
  const env: Record<string, string> = { ...spec.sandbox.env, [OUTPUT_FILE_ENV]: `/workspace/${resultPath}` };
  const base: StageJob = { name, program: AGENT_PROGRAM, args: ["--print", box.prompt], env, stdin, timeoutSecs: box.timeout_secs, box_name: name, group_id: group, resultPath };
  // The result file passes through here on its way to the run: its `metrics` are the box's usage.
  const hooks: EngineHooks = {
    ...ctx.hooks,
    output: (stage, result, artifacts) => {
      tally.record(stage, result);
      ctx.hooks.output(stage, result, artifacts);
    },
  };
  if (ctx.sandbox.kind === "mock") {
    if (box.mock) env[MOCK_AGENT_ENV] = JSON.stringify(box.mock);
    return { ctx: { ...ctx, hooks }, job: base };
  }
  const command = box.command ?? (box.provider ? [BUILTIN_AGENT] : [AGENT_PROGRAM, "--print"]);
  // Agent programs live where images install them (/usr/local/bin: voidbox-agent, npm -g).
  env.PATH ??= AGENT_PATH;
  if (box.skills?.length) env.VOIDBOX_SKILLS = JSON.stringify(box.skills);
  if (!box.provider) return { ctx: { ...ctx, hooks }, job: { ...base, program: command[0], args: [...command.slice(1), box.prompt] } };

  const p = box.provider;
  // Checked when the spec was loaded (spec/plan.ts): this does not throw here.
  const endpoint = providerEndpoint(p, spec.kind === "agent" ? "agent/provider" : `pipeline/boxes/${name}/provider`);
  Object.assign(env, providerEnv(p, endpoint.guestBaseUrl, endpoint.hostsLine));
  const sandbox = providerSandbox(ctx.sandbox, { provider: p, endpoint, secretsFile: ctx.limits.providerSecretsFile });
  return { ctx: { ...ctx, hooks, sandbox }, job: { ...base, program: "sh", args: ["-c", GUEST_WRAPPER, ...command, box.prompt] } };
}

/** What the agent program is told about its provider (never the key itself: that is added at EXEC). */
function providerEnv(p: ProviderSpec, baseUrl: string, hostsLine: string | undefined): Record<string, string> {
  const env: Record<string, string> = {
    VOIDBOX_PROVIDER_KIND: p.kind,
    VOIDBOX_PROVIDER_MODEL: p.model,
    VOIDBOX_PROVIDER_BASE_URL: baseUrl,
  };
  const keyEnv = keyEnvOf(p);
  if (keyEnv) env.VOIDBOX_PROVIDER_KEY_ENV = keyEnv;
  if (hostsLine) env.VOIDBOX_PROVIDER_HOSTS = hostsLine;
  if (p.pricing) env.VOIDBOX_PROVIDER_PRICING = JSON.stringify(p.pricing);
  // The variables Claude Code and Codex read, so an image with either works the same way.
  if (p.kind === "anthropic") Object.assign(env, { ANTHROPIC_BASE_URL: baseUrl, ANTHROPIC_MODEL: p.model });
  else Object.assign(env, { OPENAI_BASE_URL: baseUrl, OPENAI_MODEL: p.model });
  return env;
}
