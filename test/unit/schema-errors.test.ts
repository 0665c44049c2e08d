/**
 * The one wording of schema errors (src/schema-errors.ts), through its three users: run
 * specs, HTTP request validation and state files. Each message names the field.
 */
import { describe, it, expect } from "vitest";
import type { ErrorObject } from "ajv";
import { validationError } from "../../src/http/errors.js";
import { compileStateSchemas } from "../../src/store/schemas.js";
import { componentSchemas } from "../../src/openapi-document.js";
import { isSafeId } from "../../src/ids.js";
import { parseInlineSpec } from "../../src/spec/load.js";
import { inlineSpecError } from "../helpers/specs.js";


const pipeline = (stages: unknown[]) => ({ api_version: "v1", kind: "pipeline", name: "p", pipeline: { boxes: [{ name: "a", prompt: "hi" }], stages } });

describe("run specs", () => {
  it("a pipeline stage is worded by the branch its type picks", () => {
    expect(inlineSpecError(pipeline([{ type: "box" }]))).toBe("body/spec/pipeline/stages/0/name: is required");
    expect(inlineSpecError(pipeline([{ type: "fan_out", boxes: [] }]))).toBe("body/spec/pipeline/stages/0/boxes: must NOT have fewer than 1 items");
  });

  it("a stage type no branch takes lists the types there are", () => {
    expect(inlineSpecError(pipeline([{ type: "bogus", name: "a" }]))).toBe("body/spec/pipeline/stages/0/type: must be one of box, fan_out");
  });

  it("single-valued enums read as the value; the block a kind names is required", () => {
    expect(inlineSpecError({ api_version: "v2", kind: "agent", name: "a", agent: { prompt: "hi" } })).toBe('body/spec/api_version: must be "v1"');
    expect(inlineSpecError({ api_version: "v1", kind: "agent", name: "a" })).toBe("body/spec/agent: is required");
  });

  it("the loaded spec has openapi.yaml's defaults", () => {
    const { spec } = parseInlineSpec({ api_version: "v1", kind: "agent", name: "a", agent: { prompt: "hi" }, sandbox: { mounts: [{ host: "/srv", guest: "/data" }] } });
    expect(spec.sandbox).toMatchObject({ mode: "auto", memory_mb: 512, vcpus: 1, network: false, env: {} });
    expect(spec.sandbox.mounts?.[0].readonly).toBe(true);
  });
});

describe("requests", () => {
  const err = (e: Partial<ErrorObject>): ErrorObject => ({ keyword: "type", instancePath: "", schemaPath: "#", params: {}, ...e }) as ErrorObject;

  it("names the body field, lists an enum's values and keeps policy errors apart", () => {
    const e = validationError([err({ keyword: "enum", instancePath: "/requestBody/policy/mode", params: { allowedValues: ["a", "b"] } })]);
    expect([e.code, e.message]).toEqual(["INVALID_POLICY", "body/policy/mode: must be one of a, b"]);
    const missing = validationError([err({ keyword: "required", instancePath: "/requestBody", params: { missingProperty: "file" } })]);
    expect([missing.code, missing.message]).toEqual(["INVALID_SPEC", "body/file: is required"]);
    const query = validationError([err({ keyword: "maximum", instancePath: "/query/limit", message: "must be <= 1000" })]);
    expect([query.code, query.message]).toEqual(["INVALID_PARAMS", "query/limit: must be <= 1000"]);
  });
});

describe("state files", () => {
  it("says which field of a damaged file is wrong", () => {
    const check = compileStateSchemas(componentSchemas());
    expect(check.sessionMessage({})).toMatch(/^\(top level\)\/\w+: is required$/);
  });
});

describe("SafeId", () => {
  it("is openapi.yaml's pattern", () => {
    expect((componentSchemas().SafeId as { pattern: string }).pattern).toContain("[A-Za-z0-9._-]{0,127}");
    for (const ok of ["build-42", "a.b_c", "A".repeat(128)]) expect(isSafeId(ok)).toBe(true);
    for (const bad of ["", "../x", "a..b", ".hidden", "a/b", "A".repeat(129), 7]) expect(isSafeId(bad)).toBe(false);
  });
});
