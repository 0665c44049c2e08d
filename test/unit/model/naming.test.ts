// The v2 event names and the accepted status spellings (src/naming.ts).
import { describe, expect, it } from "vitest";
import { normaliseStatus, v2EventName } from "../../../src/naming.js";
import { jsonSchemaFor } from "../../helpers/openapi.js";

describe("v2EventName", () => {
  it.each([
    ["run.started", "RunStarted"],
    ["run.finished", "RunCompleted"],
    ["run.spec.loaded", "SpecLoaded"],
    ["spec.parse_failed", "SpecParseFailed"],
    ["env.provisioned", "EnvironmentProvisioned"],
    ["stage.completed", "StageSucceeded"],
    ["stage.output_truncated", "StageOutputTruncated"],
    ["microvm.spawned", "MicroVmSpawned"],
    ["log.chunk", "LogChunk"],
  ])("%s → %s (the pairs openapi.yaml declares)", (legacy, v2) => {
    expect(v2EventName(legacy)).toBe(v2);
  });

  it("names without a pair are split on '.' and '_' and capitalised", () => {
    expect(v2EventName("box.custom_thing.done")).toBe("BoxCustomThingDone");
    expect(v2EventName("x..y__z")).toBe("XYZ");
  });

  it("maps each of openapi.yaml's EventType names to the EventTypeV2 name at the same position", () => {
    const legacy = jsonSchemaFor("EventType").enum as string[];
    const v2 = jsonSchemaFor("EventTypeV2").enum as string[];
    expect(legacy.length).toBeGreaterThan(20);
    expect(legacy.map(v2EventName)).toEqual(v2);
  });
});

describe("normaliseStatus", () => {
  it("accepts completed and canceled on input, emits the canonical spellings", () => {
    expect(normaliseStatus("completed")).toBe("succeeded");
    expect(normaliseStatus("canceled")).toBe("cancelled");
  });

  it.each(["pending", "starting", "running", "succeeded", "failed", "cancelled", "other"])("%s stays %s", (s) => {
    expect(normaliseStatus(s)).toBe(s);
  });
});
