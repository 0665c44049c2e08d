/**
 * Run-spec files (the run-spec format; README "Run specs"). These types describe the spec *file*
 * format, which is not part of the HTTP API and so not in openapi.yaml; the JSON
 * Schema that validates them is in ./schema.ts and must stay in step with them.
 */

type SandboxMode = "local" | "mock" | "auto";

export interface SandboxSpec {
  mode: SandboxMode;
  memory_mb: number;
  vcpus: number;
  network: boolean;
  env: Record<string, string>;
  kernel?: string;
  initramfs?: string;
  /** A guest image (`voidbox image build`) as the stage's read-only root; absent: the initramfs. */
  image?: string;
  mounts?: MountSpec[];
}

/** A host directory shared with the guest (virtio-9p); read-only unless `readonly: false`. */
export interface MountSpec {
  host: string;
  guest: string;
  readonly?: boolean;
}

interface StepRun {
  program: string;
  args?: string[];
  env?: Record<string, string>;
  stdin_from?: string;
}

export interface WorkflowStep {
  name: string;
  run: StepRun;
  depends_on?: string[];
  timeout_secs?: number;
  /** `service` steps are long-running: they are not subject to a stage timeout. */
  mode?: "task" | "service";
}

export interface WorkflowSpec {
  steps: WorkflowStep[];
  output_step?: string;
}

/** What the mock sandbox's simulated agent writes (it writes no result.json by default). */
export interface MockAgentSpec {
  result_json?: unknown;
  artifacts?: Record<string, string>;
  exit_code?: number;
}

/**
 * The model provider an agent box talks to from its micro-VM. The key is read on the
 * daemon host (the variable `api_key_env`, or the operator's secrets file) when the stage
 * starts and is handed only to the agent process in the guest; the guest's network
 * reaches this endpoint and nothing else.
 */
export interface ProviderSpec {
  kind: "anthropic" | "openai" | "ollama";
  /** Default per kind: https://api.anthropic.com, https://api.openai.com/v1, http://127.0.0.1:11434/v1. */
  base_url?: string;
  model: string;
  /** Default per kind: ANTHROPIC_API_KEY, OPENAI_API_KEY; ollama needs none unless this is set. */
  api_key_env?: string;
  /** USD per million tokens, for the run report's cost; default: the agent program's table (0 for unknown models). */
  pricing?: { input_usd_per_mtok: number; output_usd_per_mtok: number };
}

/** What every agent box may carry besides its prompt. */
interface AgentBoxFields {
  skills?: string[];
  timeout_secs?: number;
  mock?: MockAgentSpec;
  provider?: ProviderSpec;
  /**
   * The agent program and its leading arguments; the prompt is appended as the last
   * argument. Default with a provider: the built-in `voidbox-agent` (images/agent.yaml).
   */
  command?: string[];
}

export interface BoxSpec extends AgentBoxFields {
  name: string;
  prompt: string;
}

export type PipelineStageSpec = { type: "box"; name: string } | { type: "fan_out"; boxes: string[] };

interface PipelineSpec {
  boxes: BoxSpec[];
  stages: PipelineStageSpec[];
}

interface AgentSpec extends AgentBoxFields {
  prompt: string;
  output_file?: string;
}

export interface RunSpec {
  api_version: "v1";
  kind: "workflow" | "pipeline" | "agent";
  name: string;
  sandbox: SandboxSpec;
  workflow?: WorkflowSpec;
  pipeline?: PipelineSpec;
  agent?: AgentSpec;
}
