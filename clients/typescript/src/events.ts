import type { components } from "./generated/api.js";

type Schemas = components["schemas"];

/** A run event as the wire carries it (event_type is any string). */
export type RunEvent = Schemas["RunEvent"];
/** Legacy dotted names of the event types the contract lists. */
export type EventType = Schemas["EventType"];
/** Their PascalCase (v2) names, served as event_type with api_version=v2. */
export type EventTypeV2 = Schemas["EventTypeV2"];
/** An event of a type the contract lists, with its payload typed: switch on `event_type`. */
export type KnownEvent = Schemas["TypedRunEvent"];

/**
 * The event_type of an event this client does not know (a newer daemon's). At runtime it
 * is a plain string; its type is one no known name can match (no real name ends in NUL),
 * so that `switch (e.event_type)` narrows a VoidboxEvent to exactly the known member of
 * each case, and only the `default` branch sees unknown events.
 */
export type UnknownEventType = `${string}\u0000`;
/** The fallback member: an event of a type this client does not know; payload untyped. */
export type UnknownEvent = Omit<RunEvent, "event_type"> & { event_type: UnknownEventType };

/** What the client hands out: a discriminated union by `event_type`, with a fallback member. */
export type VoidboxEvent = KnownEvent | UnknownEvent;

/** The event of a given (legacy or v2) name. */
export type EventOf<T extends KnownEvent["event_type"]> = Extract<KnownEvent, { event_type: T }>;

const TERMINAL_V2 = new Set(["RunCompleted", "RunFailed", "RunCancelled"]);

/** The run's terminal event (finished, failed or cancelled); a few output events may still follow it. */
export function isTerminalEvent(e: Pick<RunEvent, "event_type_v2">): boolean {
  return TERMINAL_V2.has(e.event_type_v2);
}

/** Types a wire event: the payload shapes are the contract's, so this is a view, not a conversion. */
export function typed(e: RunEvent): VoidboxEvent {
  return e as VoidboxEvent;
}
