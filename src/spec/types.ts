/**
 * Run specs, as loaded (defaults filled in): the RunSpec schema and its parts in
 * openapi.yaml, which spec/load.ts validates against.
 */
import type { components } from "../../generated/api.js";

type Schemas = components["schemas"];

export type RunSpec = Schemas["RunSpec"];
export type SandboxSpec = Schemas["SandboxSpec"];
export type MountSpec = Schemas["MountSpec"];
export type WorkflowSpec = Schemas["WorkflowSpec"];
export type WorkflowStep = Schemas["WorkflowStep"];
export type BoxSpec = Schemas["BoxSpec"];
export type MockAgentSpec = Schemas["MockAgentSpec"];
export type ProviderSpec = Schemas["ProviderSpec"];
export type PipelineStageSpec = Schemas["PipelineStageSpec"];
