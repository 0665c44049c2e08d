/** JSON Schema of run-spec files; see ./types.ts for the matching types. */

const safeName = { type: "string", pattern: "^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$" };
const stringMap = { type: "object", additionalProperties: { type: "string", maxLength: 65536 }, maxProperties: 256 };
const timeout = { type: "integer", minimum: 1, maximum: 604800 };
const skills = { type: "array", items: { type: "string", minLength: 1, maxLength: 256 }, maxItems: 64 };

const mockAgent = {
  type: "object",
  additionalProperties: false,
  properties: {
    result_json: {},
    artifacts: stringMap,
    exit_code: { type: "integer", minimum: 0, maximum: 255 },
  },
};

const provider = {
  type: "object",
  required: ["kind", "model"],
  additionalProperties: false,
  properties: {
    kind: { enum: ["anthropic", "openai", "ollama"] },
    base_url: { type: "string", pattern: "^https?://[^\\s]+$", maxLength: 2048 },
    model: { type: "string", minLength: 1, maxLength: 256 },
    api_key_env: { type: "string", pattern: "^[A-Za-z_][A-Za-z0-9_]{0,127}$" },
    pricing: {
      type: "object",
      required: ["input_usd_per_mtok", "output_usd_per_mtok"],
      additionalProperties: false,
      properties: { input_usd_per_mtok: { type: "number", minimum: 0, maximum: 100000 }, output_usd_per_mtok: { type: "number", minimum: 0, maximum: 100000 } },
    },
  },
};
const command = { type: "array", items: { type: "string", minLength: 1, maxLength: 4096 }, minItems: 1, maxItems: 64 };

const step = {
  type: "object",
  required: ["name", "run"],
  additionalProperties: false,
  properties: {
    name: safeName,
    run: {
      type: "object",
      required: ["program"],
      additionalProperties: false,
      properties: {
        program: { type: "string", minLength: 1, maxLength: 4096 },
        args: { type: "array", items: { type: "string", maxLength: 1048576 }, maxItems: 4096 },
        env: stringMap,
        stdin_from: safeName,
      },
    },
    depends_on: { type: "array", items: safeName, maxItems: 256, uniqueItems: true },
    timeout_secs: timeout,
    mode: { enum: ["task", "service"] },
  },
};

const box = {
  type: "object",
  required: ["name", "prompt"],
  additionalProperties: false,
  properties: {
    name: safeName,
    prompt: { type: "string", maxLength: 1048576 },
    skills,
    timeout_secs: timeout,
    mock: mockAgent,
    provider,
    command,
  },
};

export const runSpecSchema = {
  type: "object",
  required: ["api_version", "kind", "name"],
  additionalProperties: false,
  properties: {
    api_version: { const: "v1" },
    kind: { enum: ["workflow", "pipeline", "agent"] },
    name: { type: "string", minLength: 1, maxLength: 256 },
    sandbox: {
      type: "object",
      additionalProperties: false,
      properties: {
        mode: { enum: ["local", "mock", "auto"], default: "auto" },
        memory_mb: { type: "integer", minimum: 64, maximum: 65536, default: 512 },
        vcpus: { type: "integer", minimum: 1, maximum: 64, default: 1 },
        network: { type: "boolean", default: false },
        env: { ...stringMap, default: {} },
        kernel: { type: "string", minLength: 1 },
        initramfs: { type: "string", minLength: 1 },
        image: { type: "string", pattern: "^[a-z0-9][a-z0-9._-]{0,63}$" },
        mounts: {
          type: "array",
          maxItems: 8,
          items: {
            type: "object",
            required: ["host", "guest"],
            additionalProperties: false,
            properties: {
              host: { type: "string", minLength: 1, maxLength: 4096 },
              // One word on the kernel command line: no spaces, no `.`/`..` components.
              guest: { type: "string", pattern: "^(/(?!\\.\\.?(/|$))[A-Za-z0-9._-]+)+/?$", maxLength: 128 },
              readonly: { type: "boolean", default: true },
            },
          },
        },
      },
      default: {},
    },
    workflow: {
      type: "object",
      required: ["steps"],
      additionalProperties: false,
      properties: {
        steps: { type: "array", items: step, minItems: 1, maxItems: 256 },
        output_step: safeName,
      },
    },
    pipeline: {
      type: "object",
      required: ["boxes", "stages"],
      additionalProperties: false,
      properties: {
        boxes: { type: "array", items: box, minItems: 1, maxItems: 256 },
        stages: {
          type: "array",
          minItems: 1,
          maxItems: 256,
          items: {
            oneOf: [
              {
                type: "object",
                required: ["type", "name"],
                additionalProperties: false,
                properties: { type: { const: "box" }, name: safeName },
              },
              {
                type: "object",
                required: ["type", "boxes"],
                additionalProperties: false,
                properties: {
                  type: { const: "fan_out" },
                  boxes: { type: "array", items: safeName, minItems: 1, maxItems: 256 },
                },
              },
            ],
          },
        },
      },
    },
    agent: {
      type: "object",
      required: ["prompt"],
      additionalProperties: false,
      properties: {
        prompt: { type: "string", maxLength: 1048576 },
        skills,
        timeout_secs: timeout,
        output_file: { type: "string", minLength: 1, maxLength: 4096 },
        mock: mockAgent,
        provider,
        command,
      },
    },
  },
  allOf: [
    { if: { properties: { kind: { const: "workflow" } } }, then: { required: ["workflow"] } },
    { if: { properties: { kind: { const: "pipeline" } } }, then: { required: ["pipeline"] } },
    { if: { properties: { kind: { const: "agent" } } }, then: { required: ["agent"] } },
  ],
} as const;
