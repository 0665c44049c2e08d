import type { components } from "../../../generated/api.js";
import type { Handler } from "../handler.js";

export type DrainStatus = components["schemas"]["DrainStatus"];

export interface FleetDeps {
  /** Prometheus text exposition and its content type. */
  metrics(): Promise<{ text: string; contentType: string }>;
  /** Starts a drain (idempotent) and says where it stands. */
  drain(): DrainStatus;
}

export function fleetHandlers(deps: FleetDeps) {
  const getMetrics: Handler<"getMetrics"> = async () => {
    const m = await deps.metrics();
    return { raw: m.text, contentType: m.contentType };
  };
  const drainNode: Handler<"drainNode"> = () => ({ status: 202, json: deps.drain() });
  return { getMetrics, drainNode };
}
