// Publication (src/runs/publication.ts): which result.json decides, what the manifest
// lists, and when a run fails for its structured output.
import { describe, expect, it } from "vitest";
import { decidePublication, resultProblem, type StageOutputs } from "../../../src/runs/publication.js";

const NOW = "2026-11-27T10:00:00.000Z";
const ok = (extra: Record<string, unknown> = {}) => Buffer.from(JSON.stringify({ status: "ok", ...extra }));
const outputs = (entries: Array<[string, StageOutputs]>) => new Map(entries);

describe("resultProblem", () => {
  it.each([
    ["missing", undefined, /structured output missing: stage s wrote no \/workspace\/result\.json/],
    ["not JSON", Buffer.from("{nope"), /result\.json of stage s is not valid JSON/],
    ["an array", Buffer.from("[]"), /is not a JSON object/],
    ["null", Buffer.from("null"), /is not a JSON object/],
    ["a string", Buffer.from('"ok"'), /is not a JSON object/],
    ["status not a string", Buffer.from('{"status": 1}'), /has no string "status"/],
    ["no status", Buffer.from('{"summary": "x"}'), /has no string "status"/],
  ])("%s → the problem, naming the stage", (_label, bytes, problem) => {
    expect(resultProblem("s", bytes)).toMatch(problem);
  });

  it("an object with a string status has none", () => {
    expect(resultProblem("s", ok({ summary: "fine", metrics: { n: 1 } }))).toBeUndefined();
  });
});

describe("decidePublication", () => {
  it("published: a manifest entry for each stage's result.json and each artifact, with retrieval paths", () => {
    const { publication, problem } = decidePublication({
      runId: "r1",
      outputs: outputs([
        ["build", { result: ok(), artifacts: [{ name: "app.tar", media_type: "application/x-tar", size_bytes: 10 }] }],
        ["report", { result: ok(), artifacts: [] }],
      ]),
      publishStage: "report",
      mustPublish: true,
      now: NOW,
    });
    expect(problem).toBeUndefined();
    expect(publication).toEqual({
      status: "published",
      published_at: NOW,
      manifest: [
        { name: "result.json", stage: "build", media_type: "application/json", size_bytes: ok().length, retrieval_path: "/v1/runs/r1/stages/build/output-file" },
        { name: "app.tar", stage: "build", media_type: "application/x-tar", size_bytes: 10, retrieval_path: "/v1/runs/r1/stages/build/artifacts/app.tar" },
        { name: "result.json", stage: "report", media_type: "application/json", size_bytes: ok().length, retrieval_path: "/v1/runs/r1/stages/report/output-file" },
      ],
    });
  });

  it("a run that must publish fails when its deciding stage left no result.json", () => {
    const { publication, problem } = decidePublication({
      runId: "r2",
      outputs: outputs([["other", { result: ok(), artifacts: [] }]]),
      publishStage: "main",
      mustPublish: true,
      now: NOW,
    });
    expect(problem).toMatch(/structured output missing: stage main/);
    expect(publication.status).toBe("failed");
    expect(publication.error).toBe(problem);
    expect(publication.manifest.map((m) => m.stage)).toEqual(["other"]);
  });

  it("a run that must publish fails on a malformed result.json", () => {
    const { publication, problem } = decidePublication({
      runId: "r3",
      outputs: outputs([["main", { result: Buffer.from("[1]"), artifacts: [] }]]),
      publishStage: "main",
      mustPublish: true,
      now: NOW,
    });
    expect(problem).toMatch(/not a JSON object/);
    expect(publication).toMatchObject({ status: "failed", error: problem });
  });

  it("a run that need not publish: nothing written → not_started, no problem", () => {
    const out = decidePublication({ runId: "r4", outputs: outputs([]), publishStage: "main", mustPublish: false, now: NOW });
    expect(out).toEqual({ publication: { status: "not_started", manifest: [] } });
  });

  it("a run that need not publish: a malformed deciding result.json marks the publication failed, not the run", () => {
    const out = decidePublication({
      runId: "r5",
      outputs: outputs([["main", { result: Buffer.from("{"), artifacts: [] }]]),
      publishStage: "main",
      mustPublish: false,
      now: NOW,
    });
    expect(out.problem).toBeUndefined();
    expect(out.publication.status).toBe("failed");
    expect(out.publication.error).toMatch(/not valid JSON/);
  });

  it("a run that need not publish: outputs of other stages only → published", () => {
    const out = decidePublication({
      runId: "r6",
      outputs: outputs([["side", { result: Buffer.from("not json"), artifacts: [] }]]),
      publishStage: "main",
      mustPublish: false,
      now: NOW,
    });
    expect(out.problem).toBeUndefined();
    expect(out.publication).toMatchObject({ status: "published", published_at: NOW });
  });

  it("without a deciding stage nothing is checked", () => {
    const out = decidePublication({ runId: "r7", outputs: outputs([["a", { result: Buffer.from("x"), artifacts: [] }]]), mustPublish: true, now: NOW });
    expect(out.problem).toBeUndefined();
    expect(out.publication.status).toBe("published");
  });
});
