import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { operations } from "../../generated/api.js";
import type { JsonBytes } from "../json-bytes.js";

type OperationId = keyof operations;

type Params<O extends OperationId, In extends "path" | "query"> = operations[O]["parameters"] extends { [K in In]?: infer P }
  ? NonNullable<P>
  : never;
type RequestBody<O extends OperationId> = operations[O]["requestBody"];
/** The JSON body; `| undefined` only where openapi.yaml does not mark it required (validation enforces it). */
type Body<O extends OperationId> = [NonNullable<RequestBody<O>>] extends [never]
  ? undefined
  : NonNullable<RequestBody<O>> extends { content: { "application/json": infer B } }
    ? undefined extends RequestBody<O>
      ? B | undefined
      : B
    : undefined;

/** What a handler receives: typed from generated/ by operationId, already validated. */
export interface HandlerInput<O extends OperationId> {
  params: Params<O, "path">;
  query: Params<O, "query">;
  body: Body<O>;
  /** The request headers (names lower-case), for content negotiation. */
  headers: IncomingHttpHeaders;
}

type Responses<O extends OperationId> = operations[O]["responses"];
/** The statuses a handler replies with; errors are thrown as ApiError (http/errors.ts writes them). */
type SuccessStatus<O extends OperationId> = Extract<keyof Responses<O>, 200 | 201 | 202 | 204>;
type Content<O extends OperationId, S extends SuccessStatus<O>> = Responses<O>[S] extends { content: infer C } ? C : never;
/** 200 may be left implicit; any other status is spelled out. */
type StatusOf<S> = S extends 200 ? { status?: 200 } : { status: S };

type BodyReply<C> =
  | (C extends { "application/json": infer J } ? { json: J } | { raw: JsonBytes<J>; contentType: "application/json; charset=utf-8" | "application/json" } : never)
  | (C extends { "text/event-stream": unknown } ? { stream: (req: IncomingMessage, res: ServerResponse) => void } : never)
  | (Exclude<keyof C, "application/json" | "text/event-stream"> extends never ? never : { raw: string | Buffer; contentType: string });

/**
 * What a handler returns, typed from the operation's success responses in openapi.yaml:
 * a JSON value of the declared schema (or its bytes already encoded), raw bytes for a
 * non-JSON media type (with the content type it is served as), or a stream that writes
 * the whole response itself (server-sent events).
 */
type Reply<O extends OperationId> = { [S in SuccessStatus<O>]: StatusOf<S> & BodyReply<Content<O, S>> }[SuccessStatus<O>];

/** Any operation's reply, as `http/app.ts` writes it. */
export type AnyReply =
  | { status?: number; json: unknown }
  | { status?: number; raw: string | Buffer; contentType: string }
  | { stream: (req: IncomingMessage, res: ServerResponse) => void };

/** Synchronous, except where a reply must be gathered (the metrics scrape). */
export type Handler<O extends OperationId> = (input: HandlerInput<O>) => Reply<O> | Promise<Reply<O>>;
export type HandlerMap = { [O in OperationId]: Handler<O> };
