import type { RunService } from "../../runs/service.js";
import type { Handler } from "../handler.js";
import { eventStream, wantsEventStream, type EventStreamOptions } from "../sse.js";

/** Page size when only a cursor is given (openapi.yaml says so). */
const DEFAULT_PAGE = 100;

const isV2 = (q: { api_version?: string }) => q.api_version === "v2";

export function runHandlers(runs: RunService, sse: EventStreamOptions) {
  const createRun: Handler<"createRun"> = ({ body }) => ({ json: runs.create(body) });

  const listRuns: Handler<"listRuns"> = ({ query }) => {
    const filter = query.state === "active" || query.state === "terminal" ? query.state : undefined;
    // Opt-in: without limit or cursor the reply is every run with its events, as it always was.
    if (query.limit !== undefined || query.cursor !== undefined) return { json: runs.page(filter, query.limit ?? DEFAULT_PAGE, query.cursor) };
    return { raw: runs.listJson(filter, isV2(query)), contentType: "application/json; charset=utf-8" };
  };

  const getRun: Handler<"getRun"> = ({ params, query }) => ({ json: runs.get(params.run_id).toState(isV2(query)) });

  // Events are served from their cached serialisations: no per-request stringify.
  const listRunEvents: Handler<"listRunEvents"> = ({ params, query, headers }) => {
    const run = runs.get(params.run_id);
    if (wantsEventStream(headers.accept)) {
      // A reconnecting EventSource sends Last-Event-ID; it wins over the URL's from_event_id.
      const last = headers["last-event-id"];
      return { stream: eventStream(run, run.indexAfter(typeof last === "string" ? last : query.from_event_id), isV2(query), sse) };
    }
    return { raw: run.eventsJson(query.from_event_id, isV2(query)), contentType: "application/json; charset=utf-8" };
  };

  const cancelRun: Handler<"cancelRun"> = ({ params, body }) => ({ json: runs.cancel(params.run_id, body?.reason) });

  return { createRun, listRuns, getRun, listRunEvents, cancelRun };
}
