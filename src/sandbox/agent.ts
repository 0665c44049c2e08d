/** The agent program a box without a provider or command runs (inside the guest, or simulated by the mock). */
export const AGENT_PROGRAM = "claude-code";
/** The built-in agent (guest/agent/voidbox-agent, installed by images/agent.yaml): the default with a provider. */
export const BUILTIN_AGENT = "voidbox-agent";
/** Environment variable carrying a box's `mock:` block to the mock sandbox's simulated agent. */
export const MOCK_AGENT_ENV = "VOIDBOX_MOCK_AGENT";
/** Tells the agent where its structured result goes (an absolute guest path under /workspace). */
export const OUTPUT_FILE_ENV = "VOIDBOX_OUTPUT_FILE";
