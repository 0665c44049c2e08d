// The one judgement of a stage's result.json (src/runs/result-json.ts) that serving and publication share.
import { describe, expect, it } from "vitest";
import { describeResultJsonFault, resultJsonFault } from "../../../src/runs/result-json.js";

describe("resultJsonFault", () => {
  it.each([
    ["absent", undefined, "missing"],
    ["empty", Buffer.alloc(0), "not_json"],
    ["not JSON", Buffer.from("{nope"), "not_json"],
    ["an array", Buffer.from("[]"), "not_object"],
    ["null", Buffer.from("null"), "not_object"],
    ["a number", Buffer.from("3"), "not_object"],
    ["status not a string", Buffer.from('{"status": 1}'), "no_status"],
    ["no status", Buffer.from('{"summary": "x"}'), "no_status"],
    ["an object with a string status", Buffer.from('{"status": "ok"}'), null],
  ])("%s → %s", (_label, bytes, fault) => {
    expect(resultJsonFault(bytes)).toBe(fault);
  });

  it("words each fault naming its subject", () => {
    expect(describeResultJsonFault("missing", "stage a of run r")).toBe("stage a of run r wrote no /workspace/result.json");
    expect(describeResultJsonFault("not_json", "stage a")).toBe("result.json of stage a is not valid JSON");
  });
});
