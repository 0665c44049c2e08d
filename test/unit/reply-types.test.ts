// Handler replies are typed from openapi.yaml (src/http/handler.ts): each @ts-expect-error
// below is a reply the contract does not allow, and `npm run typecheck` (which checks
// test/) fails if any of them stops being a type error.
import { describe, expect, it } from "vitest";
import type { components } from "../../generated/api.js";
import type { Handler, HandlerInput } from "../../src/http/handler.js";
import { encodedJson } from "../../src/json-bytes.js";

type StageList = components["schemas"]["StageList"];
const list: StageList = { run_id: "r", attempt_id: 1, updated_at: "2026-11-27T10:00:00.000Z", stages: [] };

// Allowed: the declared schema, 200 left implicit; a declared non-200 status spelled out.
const stages: Handler<"listRunStages"> = () => ({ json: list });
const drain: Handler<"drainNode"> = () => ({ status: 202, json: { draining: true, active_runs: 0, drain_timeout_secs: 900 } });
// Allowed: bytes labelled with what they encode; raw bytes for a non-JSON media type.
const events: Handler<"listRunEvents"> = () => ({ raw: encodedJson<components["schemas"]["RunEvent"][]>(Buffer.from("[]")), contentType: "application/json; charset=utf-8" });
const artifact: Handler<"getStageArtifact"> = () => ({ raw: Buffer.from("x"), contentType: "text/plain" });

// @ts-expect-error a renamed field (attempt_id is required)
const renamed: Handler<"listRunStages"> = () => ({ json: { run_id: "r", attempt: 1, updated_at: "", stages: [] } });
// @ts-expect-error a field of the wrong type
const mistyped: Handler<"listRunStages"> = () => ({ json: { ...list, attempt_id: "1" } });
// @ts-expect-error an undeclared status (drainNode answers 202)
const wrongStatus: Handler<"drainNode"> = () => ({ status: 200, json: { draining: true, active_runs: 0, drain_timeout_secs: 900 } });
// @ts-expect-error bytes that are not labelled as the declared schema
const unlabelled: Handler<"listRunEvents"> = () => ({ raw: Buffer.from("[]"), contentType: "application/json; charset=utf-8" });
// @ts-expect-error a stream for an operation that declares no text/event-stream
const stream: Handler<"getRun"> = () => ({ stream: () => undefined });
// @ts-expect-error an extra field, where the literal is checked (satisfies)
const extra = { ...list, colour: "red" } satisfies StageList;

// A required request body is not `| undefined`; an optional one is.
const createBody = (i: HandlerInput<"createRun">): string => i.body.file ?? "";
// @ts-expect-error cancelRun's body is optional
const cancelBody = (i: HandlerInput<"cancelRun">): string | undefined => i.body.reason;

describe("typed replies", () => {
  it("the allowed replies are what the handlers return at run time", () => {
    const input = {} as HandlerInput<"listRunStages">;
    expect(stages(input)).toEqual({ json: list });
    expect(drain({} as HandlerInput<"drainNode">)).toMatchObject({ status: 202 });
    expect([events, artifact, renamed, mistyped, wrongStatus, unlabelled, stream, extra, createBody, cancelBody].length).toBe(10);
  });
});
