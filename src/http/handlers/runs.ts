import type { RunService } from "../../runs/service.js";
import type { Handler } from "../handler.js";

const isV2 = (q: { api_version?: string }) => q.api_version === "v2";

export function runHandlers(runs: RunService) {
  const createRun: Handler<"createRun"> = ({ body }) => ({ json: runs.create(body!) });

  const listRuns: Handler<"listRuns"> = ({ query }) => {
    const filter = query.state === "active" || query.state === "terminal" ? query.state : undefined;
    return { json: { runs: runs.list(filter).map((r) => r.toState(isV2(query))) } };
  };

  const getRun: Handler<"getRun"> = ({ params, query }) => ({ json: runs.get(params.run_id).toState(isV2(query)) });

  // Events are served from their cached serialisations: no per-request stringify.
  const listRunEvents: Handler<"listRunEvents"> = ({ params, query }) => ({
    raw: runs.get(params.run_id).eventsJson(query.from_event_id, isV2(query)),
    contentType: "application/json; charset=utf-8",
  });

  const cancelRun: Handler<"cancelRun"> = ({ params, body }) => ({ json: runs.cancel(params.run_id, body?.reason) });

  return { createRun, listRuns, getRun, listRunEvents, cancelRun };
}
