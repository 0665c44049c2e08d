/** The agent program every pipeline/agent box runs (inside the guest, or simulated by the mock). */
export const AGENT_PROGRAM = "claude-code";
/** Environment variable carrying a box's `mock:` block to the mock sandbox's simulated agent. */
export const MOCK_AGENT_ENV = "VOIDBOX_MOCK_AGENT";
/** Tells the agent where its structured result goes (an absolute guest path under /workspace). */
export const OUTPUT_FILE_ENV = "VOIDBOX_OUTPUT_FILE";
