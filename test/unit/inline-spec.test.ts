import { describe, it, expect } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { validateResponse } from "../helpers/openapi.js";
import { daemonsOfFile, startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { errorOf, request } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import type { CreateRunResponse } from "../helpers/types.js";

const start = daemonsOfFile();
const daemon = (opts: Parameters<typeof startDaemon>[1] = {}) => start(tmpDir(), opts);

// One step: the run fails for want of a result.json, but its output is the step's stdout.
const CAT = workflow("cat", [{ name: "read", run: { program: "cat" } }]);
const TWO = workflow("two", [
  { name: "read", run: { program: "cat" } },
  { name: "shout", depends_on: ["read"], run: { program: "tr", args: ["a-z", "A-Z"] } },
]);
const YAML = `api_version: v1
kind: workflow
name: yaml-inline
sandbox: { mode: mock }
workflow:
  steps:
    - name: hi
      run: { program: echo, args: [hi from yaml] }
    - name: again
      depends_on: [hi]
      run: { program: cat }
`;

/** POST /v1/runs with any body, invalid ones included (so not through the typed client). */
const create = (t: TestDaemon, body: unknown) => request<CreateRunResponse>(t.url, "/v1/runs", { method: "POST", body });

describe("inline specs", () => {
  it("an inline object runs; its file is inline:spec.json, stored in the run directory", async () => {
    const t = await daemon();
    const r = await create(t, { spec: TWO, input: "hello inline\n" });
    expect(r.status).toBe(200);
    const id = r.json.run_id;
    // Stored before the reply: the spec as sent and the input.
    const dir = path.join(t.stateDir, "runs", id);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "spec.json"), "utf8"))).toEqual(TWO);
    expect(fs.readFileSync(path.join(dir, "input"), "utf8")).toBe("hello inline\n");
    const st = await waitForTerminal(t.url, id);
    expect(st.status).toBe("succeeded");
    expect(st.file).toBe("inline:spec.json");
    expect(st.events[0].message).toBe("run created for inline:spec.json");
    expect(st.report!.output).toBe("HELLO INLINE\n");
    validateResponse("getRun", 200, st);
  });

  it("inline YAML text runs", async () => {
    const t = await daemon();
    const r = await create(t, { spec: YAML });
    expect(r.status).toBe(200);
    const st = await waitForTerminal(t.url, r.json.run_id);
    expect(st.status).toBe("succeeded");
    expect(st.report).toMatchObject({ name: "yaml-inline", output: "hi from yaml\n" });
  });

  it("inline JSON text runs", async () => {
    const t = await daemon();
    const r = await create(t, { spec: JSON.stringify(CAT), input: "x" });
    expect(r.status).toBe(200);
    expect((await waitForTerminal(t.url, r.json.run_id)).report!.output).toBe("x");
  });

  it("input is the stdin of the first steps only; later steps read their dependencies", async () => {
    const t = await daemon();
    const r = await create(t, { spec: TWO, input: "abc\n" });
    const st = await waitForTerminal(t.url, r.json.run_id);
    expect(st.status).toBe("succeeded");
    expect(st.report!.output).toBe("ABC\n");
  });

  it("input works with a spec file too", async () => {
    const t = await daemon();
    const file = writeSpec(tmpDir("vbx-specs-"), CAT);
    const r = await create(t, { file, input: "from file\n" });
    expect(r.status).toBe(200);
    const st = await waitForTerminal(t.url, r.json.run_id);
    expect(st.file).toBe(file);
    expect(st.report!.output).toBe("from file\n");
  });

  it.each([
    ["neither file nor spec", { input: "x" }],
    ["both file and spec", { file: "/x.yaml", spec: CAT }],
    ["an empty body object", {}],
  ])("%s → 400 INVALID_SPEC naming both fields", async (_label, body) => {
    const t = await daemon();
    const r = await create(t, body);
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ code: "INVALID_SPEC", message: "body: exactly one of file or spec is required", retryable: false });
    validateResponse("createRun", 400, r.json);
  });

  it("a file of the wrong type names body/file only", async () => {
    const t = await daemon();
    const r = await create(t, { file: 42 });
    expect(r.status).toBe(400);
    expect(errorOf(r).message).toBe("body/file: must be string");
  });

  it.each([
    ["a number", 42, "body/spec: must be object or string"],
    ["an empty string", "", "body/spec"],
    ["a bad sandbox mode", { ...CAT, sandbox: { mode: "bogus" } }, "body/spec/sandbox/mode: must be one of"],
    ["a missing name", { api_version: "v1", kind: "workflow", sandbox: { mode: "mock" }, workflow: { steps: [] } }, "body/spec/name: is required"],
    ["an unknown dependency", workflow("w", [{ name: "a", depends_on: ["zz"], run: { program: "true" } }]), "body/spec/workflow/steps/0/depends_on: unknown dependency zz"],
    ["YAML that does not parse", "api_version: v1\n  kind: : workflow\n- x", "body/spec is not valid YAML"],
    ["YAML of a scalar", "just text", "body/spec: must be object"],
  ])("a bad inline spec (%s) → 400 INVALID_SPEC naming the field", async (_label, spec, message) => {
    const t = await daemon();
    const r = await create(t, { spec });
    expect(r.status).toBe(400);
    expect(errorOf(r).code).toBe("INVALID_SPEC");
    expect(errorOf(r).message).toContain(message);
    // Nothing was created.
    expect(await sdk(t.url).listRuns()).toEqual([]);
  });

  it("a spec text over the spec size limit → 400 naming body/spec", async () => {
    const t = await daemon();
    const r = await create(t, { spec: `# ${"x".repeat(1024 * 1024)}\n` + YAML });
    expect(r.status).toBe(400);
    expect(errorOf(r).message).toMatch(/^body\/spec: is \d+ bytes of text \(limit 1048576\)$/);
  });

  it("an input over --max-run-input → 400 naming body/input", async () => {
    const t = await daemon({ limits: { maxRunInputBytes: 8 } });
    const r = await create(t, { spec: CAT, input: "123456789" });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ code: "INVALID_SPEC", message: "body/input: is 9 bytes (limit 8)", retryable: false });
    expect((await create(t, { spec: CAT, input: "12345678" })).status).toBe(200);
  });

  it("idempotent create with run_id: the active run is returned, a terminal one is 409", async () => {
    const t = await daemon();
    const sleepy = workflow("sleepy", [{ name: "nap", run: { program: "sleep", args: ["300"] } }]);
    const a = await create(t, { spec: sleepy, run_id: "inline-1" });
    const b = await create(t, { spec: sleepy, run_id: "inline-1" });
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(b.json).toEqual({ run_id: "inline-1", attempt_id: 1, state: "running" });
    expect(await sdk(t.url).listRuns()).toHaveLength(1);
    expect((await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: "inline-1" } } })).response.status).toBe(200);
    expect((await create(t, { spec: sleepy, run_id: "inline-1" })).status).toBe(409);
  });
});
