import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { operations } from "../../generated/api.js";

export type OperationId = keyof operations;

type Params<O extends OperationId, In extends "path" | "query"> = operations[O]["parameters"] extends { [K in In]?: infer P }
  ? NonNullable<P>
  : never;
type Body<O extends OperationId> = operations[O] extends { requestBody?: { content: { "application/json": infer B } } } ? B | undefined : undefined;

/** What a handler receives: typed from generated/ by operationId, already validated. */
export interface HandlerInput<O extends OperationId> {
  params: Params<O, "path">;
  query: Params<O, "query">;
  body: Body<O>;
  /** The request headers (names lower-case), for content negotiation. */
  headers: IncomingHttpHeaders;
}

/**
 * What a handler returns: a JSON value, raw bytes (with their content type), or a
 * stream that writes the whole response itself (server-sent events).
 */
export type Reply =
  | { status?: number; json: unknown }
  | { status?: number; raw: string | Buffer; contentType: string }
  | { stream: (req: IncomingMessage, res: ServerResponse) => void };

/** Synchronous, except where a reply must be gathered (the metrics scrape). */
export type Handler<O extends OperationId> = (input: HandlerInput<O>) => Reply | Promise<Reply>;
export type HandlerMap = { [O in OperationId]: Handler<O> };
