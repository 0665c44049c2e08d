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
}

/** What a handler returns: a JSON value, or raw bytes (with their content type). */
export type Reply = { status?: number; json: unknown } | { status?: number; raw: string | Buffer; contentType: string };

/** Synchronous, except where a reply must be gathered (the metrics scrape). */
export type Handler<O extends OperationId> = (input: HandlerInput<O>) => Reply | Promise<Reply>;
export type HandlerMap = { [O in OperationId]: Handler<O> };
