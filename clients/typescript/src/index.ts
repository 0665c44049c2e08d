export * from "./client.js";
export * from "./events.js";
export { parseSse, type SseMessage } from "./sse.js";
export type { components, operations, paths } from "./generated/api.js";
