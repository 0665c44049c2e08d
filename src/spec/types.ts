/**
 * Run-spec files (the run-spec format; README "Run specs"). These types describe the spec *file*
 * format, which is not part of the HTTP API and so not in openapi.yaml; the JSON
 * Schema that validates them is in ./schema.ts and must stay in step with them.
 */

export type SandboxMode = "local" | "mock" | "auto";

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

export interface StepRun {
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

export interface BoxSpec {
  name: string;
  prompt: string;
  skills?: string[];
  timeout_secs?: number;
  mock?: MockAgentSpec;
}

export type PipelineStageSpec = { type: "box"; name: string } | { type: "fan_out"; boxes: string[] };

export interface PipelineSpec {
  boxes: BoxSpec[];
  stages: PipelineStageSpec[];
}

export interface AgentSpec {
  prompt: string;
  skills?: string[];
  timeout_secs?: number;
  output_file?: string;
  mock?: MockAgentSpec;
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
