// Structured output and artifacts (openapi.yaml ArtifactPublication and the stage routes) through HTTP, mock sandbox.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { errorOf, request } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { createRun, waitForEvent, waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import type { SessionMessage, StructuredOutput } from "../helpers/types.js";

let t: TestDaemon;
const specDir = tmpDir("vbx-out-specs-");
beforeAll(async () => {
  t = await startDaemon(tmpDir());
});
afterAll(async () => {
  await t?.d.close();
});

const sh = (name: string, script: string, more: Record<string, unknown> = {}) => ({ name, run: { program: "sh", args: ["-c", script] }, ...more });
const heredoc = (file: string, body: string) => `cat > ${file} <<EOF\n${body}\nEOF`;

const RESULT = JSON.stringify({ status: "ok", summary: "did it", metrics: { n: 1 }, artifacts: [{ name: "report.txt", media_type: "text/plain" }] });
const REPORT = "hello artifact\nline two";

async function run(spec: unknown, extra: Record<string, unknown> = {}) {
  const id = await createRun(t.url, writeSpec(specDir, spec), extra);
  return { id, st: await waitForTerminal(t.url, id) };
}

describe("single-step workflow", () => {
  it("valid result.json + listed artifact → succeeded, published, retrievable byte for byte (also under main)", async () => {
    const { id, st } = await run(workflow("pub", [sh("build", `${heredoc("/workspace/result.json", RESULT)}\n${heredoc("/workspace/report.txt", REPORT)}`)]));
    expect(st.status).toBe("succeeded");
    const pub = st.artifact_publication;
    expect(pub!.status).toBe("published");
    expect(typeof pub!.published_at).toBe("string");
    const find = (stage: string, name: string) => pub!.manifest.find((m) => m.stage === stage && m.name === name);
    for (const stage of ["build", "main"]) {
      expect(find(stage, "result.json")).toMatchObject({
        media_type: "application/json",
        size_bytes: Buffer.byteLength(RESULT + "\n"),
        retrieval_path: `/v1/runs/${id}/stages/${stage}/output-file`,
      });
      expect(find(stage, "report.txt")).toMatchObject({
        media_type: "text/plain",
        size_bytes: Buffer.byteLength(REPORT + "\n"),
        retrieval_path: `/v1/runs/${id}/stages/${stage}/artifacts/report.txt`,
      });
    }
    for (const m of pub!.manifest) {
      const r = await request(t.url, m.retrieval_path);
      expect(r.status, m.retrieval_path).toBe(200);
      expect(r.contentType.split(";")[0]).toBe(m.media_type);
      expect(r.bytes.toString("utf8")).toBe(m.name === "result.json" ? RESULT + "\n" : REPORT + "\n");
      expect(r.bytes.length).toBe(m.size_bytes);
    }
    const missing = await request(t.url, `/v1/runs/${id}/stages/build/artifacts/nope.txt`);
    expect(missing.status).toBe(404);
    expect(errorOf(missing).code).toBe("ARTIFACT_NOT_FOUND");
    const otherStage = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/ghost/output-file`);
    expect(otherStage.status).toBe(404);
    expect(errorOf(otherStage).code).toBe("STRUCTURED_OUTPUT_MISSING");
  });

  it("missing result.json → failed, output-file 404 STRUCTURED_OUTPUT_MISSING", async () => {
    const { id, st } = await run(workflow("nores", [{ name: "only", run: { program: "echo", args: ["hi"] } }]));
    expect(st.status).toBe("failed");
    expect(st.error).toMatch(/structured output missing/i);
    expect(st.artifact_publication!.status).toBe("failed");
    expect(st.events[st.events.length - 1].event_type === "run.failed" || st.events.some((e) => e.event_type === "run.failed")).toBe(true);
    for (const stage of ["only", "main"]) {
      const r = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/${stage}/output-file`);
      expect(r.status).toBe(404);
      expect(r.json).toMatchObject({ code: "STRUCTURED_OUTPUT_MISSING", retryable: false });
    }
  });

  it("non-JSON result.json → failed, output-file 422 STRUCTURED_OUTPUT_MALFORMED", async () => {
    const { id, st } = await run(workflow("bad", [sh("only", "echo not json at all > /workspace/result.json")]));
    expect(st.status).toBe("failed");
    expect(st.error).toMatch(/malformed/i);
    expect(st.artifact_publication!.status).toBe("failed");
    const r = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/only/output-file`);
    expect(r.status).toBe(422);
    expect(r.json).toMatchObject({ code: "STRUCTURED_OUTPUT_MALFORMED", retryable: false });
  });

  it("JSON without status → failed, publication failed, raw bytes still served", async () => {
    const body = JSON.stringify({ summary: "no status here" });
    const { id, st } = await run(workflow("nostatus", [sh("only", heredoc("/workspace/result.json", body))]));
    expect(st.status).toBe("failed");
    expect(st.error).toMatch(/status/);
    expect(st.artifact_publication!.status).toBe("failed");
    const r = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/only/output-file`);
    expect(r.status).toBe(200);
    expect(r.contentType).toMatch(/^application\/json/);
    expect(r.text).toBe(body + "\n");
  });

  it("an artifact is served with its declared media type, or application/octet-stream when that is none or not a media type", async () => {
    // A guest writes media_type; one with CR/LF used to reach writeHead, which threw (500).
    const types: Record<string, string | undefined> = {
      "md.txt": "text/markdown; charset=utf-8",
      "none.bin": undefined,
      "word.txt": "garbage",
      "crlf.txt": "text/plain\r\nX-Injected: 1",
      "utf.txt": "text/plain; x=\"\u20ac\"",
    };
    const result = JSON.stringify({ status: "ok", artifacts: Object.entries(types).map(([name, media_type]) => ({ name, media_type })) });
    const script = [heredoc("/workspace/result.json", result), ...Object.keys(types).map((n) => heredoc(`/workspace/${n}`, n))].join("\n");
    const { id, st } = await run(workflow("types", [sh("only", script)]));
    expect(st.status).toBe("succeeded");
    for (const [name, declared] of Object.entries(types)) {
      const r = await request(t.url, `/v1/runs/${id}/stages/only/artifacts/${name}`);
      expect(r.status, name).toBe(200);
      expect(r.contentType, name).toBe(name === "md.txt" ? declared : "application/octet-stream");
      expect(r.text, name).toBe(name + "\n");
    }
  });

  it("artifact names with .. or / are not stored; such names in a GET are 400", async () => {
    const result = JSON.stringify({
      status: "ok",
      artifacts: [{ name: "../evil" }, { name: "a/b" }, { name: "..hidden" }, { name: "ok.txt" }, { name: "sneaky", path: "../../etc/passwd" }],
    });
    const script = [heredoc("/workspace/result.json", result), heredoc("/workspace/a/b", "AB"), heredoc("/workspace/ok.txt", "OK"), heredoc("/workspace/..hidden", "H")].join("\n");
    const { id, st } = await run(workflow("names", [sh("only", script)]));
    expect(st.status).toBe("succeeded");
    const names = st.artifact_publication!.manifest.filter((m) => m.stage === "only").map((m) => m.name).sort();
    expect(names).toEqual(["ok.txt", "result.json"]);
    const stored = fs.readdirSync(path.join(t.stateDir, "runs", id, "stages", "only", "artifacts"));
    expect(stored).toEqual(["ok.txt"]);
    expect(fs.existsSync(path.join(t.stateDir, "runs", id, "stages", "evil"))).toBe(false);
    for (const bad of ["..hidden", "a%2Fb", "..%2Fevil", "%2e%2e"]) {
      const r = await request(t.url, `/v1/runs/${id}/stages/only/artifacts/${bad}`);
      expect(r.status, bad).toBe(400);
      expect(errorOf(r).code, bad).toMatch(/^INVALID_/);
    }
    const stage = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/..x/output-file`);
    expect(stage.status).toBe(400);
  });
});

describe("other run shapes", () => {
  it("multi-step workflow without result.json → succeeded", async () => {
    const { st } = await run(
      workflow("multi", [
        { name: "fetch", run: { program: "echo", args: ["hello"] } },
        { name: "shout", depends_on: ["fetch"], run: { program: "tr", args: ["a-z", "A-Z"] } },
      ]),
    );
    expect(st.status).toBe("succeeded");
    expect(st.report!.output).toBe("HELLO\n");
    expect(st.artifact_publication).toMatchObject({ status: "not_started", manifest: [] });
  });

  it("cancelled run → finished_at, stage_states and artifact_publication present", async () => {
    const file = writeSpec(specDir, workflow("sleepy", [{ name: "nap", run: { program: "sleep", args: ["300"] } }]));
    const id = await createRun(t.url, file);
    await waitForEvent(t.url, id, (e) => e.event_type === "stage.started", "nap to start");
    const c = await sdk(t.url).api.POST("/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } } });
    expect(c.response.status).toBe(200);
    const st = await sdk(t.url).getRun(id);
    expect(st.status).toBe("cancelled");
    expect(st.finished_at).toEqual(expect.any(String));
    expect(st.stage_states).toMatchObject({ nap: { status: "failed", exit_code: -1 } });
    expect(st.artifact_publication).not.toBeNull();
    expect(["not_started", "failed"]).toContain(st.artifact_publication!.status);
    expect(Array.isArray(st.artifact_publication!.manifest)).toBe(true);
  });

  it("unknown run → 404 NOT_FOUND on every run route", async () => {
    for (const p of ["/v1/runs/ghost", "/v1/runs/ghost/events", "/v1/runs/ghost/stages", "/v1/runs/ghost/stages/main/output-file", "/v1/runs/ghost/stages/main/artifacts/x.txt"]) {
      const r = await request(t.url, p);
      expect(r.status, p).toBe(404);
      expect(r.json, p).toMatchObject({ code: "NOT_FOUND", retryable: false });
    }
  });

  it("agent run with a mock result → succeeded + published", async () => {
    const { id, st } = await run({
      api_version: "v1",
      kind: "agent",
      name: "ag",
      sandbox: { mode: "mock" },
      agent: {
        prompt: "write notes",
        skills: ["agent:claude-code"],
        mock: { result_json: { status: "ok", summary: "s", artifacts: [{ name: "notes.md", media_type: "text/markdown" }] }, artifacts: { "notes.md": "# notes\n" } },
      },
    });
    expect(st.status).toBe("succeeded");
    expect(st.report).toMatchObject({ kind: "agent", success: true, output: "[mock] write notes\n" });
    expect(st.artifact_publication!.status).toBe("published");
    const out = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/main/output-file`);
    expect(out.status).toBe(200);
    expect(JSON.parse(out.text).status).toBe("ok");
    const art = await request(t.url, `/v1/runs/${id}/stages/main/artifacts/notes.md`);
    expect(art.status).toBe(200);
    expect(art.contentType).toMatch(/^text\/markdown/);
    expect(art.text).toBe("# notes\n");
  });

  it("agent run without a mock result → failed naming the missing structured output", async () => {
    const { st } = await run({ api_version: "v1", kind: "agent", name: "ag2", sandbox: { mode: "mock" }, agent: { prompt: "hi" } });
    expect(st.status).toBe("failed");
    expect(st.error).toMatch(/structured output missing/i);
    expect(st.exit_code).toBe(0);
    expect(st.events.filter((e) => e.event_type === "run.failed")).toHaveLength(1);
  });

  it("agent output_file: the result is read from that path and published as the stage output", async () => {
    const { id, st } = await run({
      api_version: "v1",
      kind: "agent",
      name: "ag-out",
      sandbox: { mode: "mock" },
      agent: { prompt: "p", output_file: "/workspace/out/answer.json", mock: { result_json: { status: "ok", summary: "elsewhere" } } },
    });
    expect(st.status).toBe("succeeded");
    const out = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/main/output-file`);
    expect(out.status).toBe(200);
    expect(JSON.parse(out.text)).toEqual({ status: "ok", summary: "elsewhere" });
  });

  it("agent output_file outside /workspace fails the run as an invalid spec", async () => {
    const { st } = await run({ api_version: "v1", kind: "agent", name: "ag-bad", sandbox: { mode: "mock" }, agent: { prompt: "p", output_file: "../etc/passwd" } });
    expect(st.status).toBe("failed");
    expect(st.error).toMatch(/agent\/output_file/);
    expect(st.events.map((e) => e.event_type)).toContain("spec.parse_failed");
  });

  it("agent run with a malformed mock result → failed", async () => {
    const { st } = await run({ api_version: "v1", kind: "agent", name: "ag3", sandbox: { mode: "mock" }, agent: { prompt: "hi", mock: { result_json: "{oops" } } });
    expect(st.status).toBe("failed");
    expect(st.error).toMatch(/malformed/i);
  });

  it("pipeline box → fan_out(2) → box: succeeded, stages listed in plan order with groups", async () => {
    const ok = (s: string) => ({ result_json: { status: "ok", summary: s } });
    const { id, st } = await run({
      api_version: "v1",
      kind: "pipeline",
      name: "pipe",
      sandbox: { mode: "mock" },
      pipeline: {
        boxes: [
          { name: "plan", prompt: "plan it", mock: ok("plan") },
          { name: "left", prompt: "do left", mock: ok("left") },
          { name: "right", prompt: "do right", mock: ok("right") },
          { name: "merge", prompt: "merge", mock: ok("merge") },
        ],
        stages: [{ type: "box", name: "plan" }, { type: "fan_out", boxes: ["left", "right"] }, { type: "box", name: "merge" }],
      },
    });
    expect(st.status).toBe("succeeded");
    expect(st.artifact_publication!.status).toBe("published");
    const reply = await sdk(t.url).api.GET("/v1/runs/{run_id}/stages", { params: { path: { run_id: id } } });
    expect(reply.response.status).toBe(200);
    const stages = reply.data!;
    expect(stages.run_id).toBe(id);
    expect(stages.stages.map((s) => [s.name, s.status, s.group, s.depends_on])).toEqual([
      ["plan", "succeeded", null, []],
      ["left", "succeeded", expect.any(String), ["plan"]],
      ["right", "succeeded", expect.any(String), ["plan"]],
      ["merge", "succeeded", null, ["left", "right"]],
    ]);
    expect(stages.stages[1].group).toBe(stages.stages[2].group);
    for (const s of stages.stages) {
      expect(s.attempt).toBe(1);
      expect(s.exit_code).toBe(0);
      expect(typeof s.duration_ms).toBe("number");
    }
    const merged = await request<StructuredOutput>(t.url, `/v1/runs/${id}/stages/merge/output-file`);
    expect(JSON.parse(merged.text).summary).toBe("merge");
    const fan = st.events.filter((e) => e.event_type === "stage.started" && (e.stage_name === "left" || e.stage_name === "right"));
    expect(fan.every((e) => e.group_id === stages.stages[1].group)).toBe(true);
    expect(st.events.filter((e) => e.event_type === "box.started")).toHaveLength(4);
  });
});

describe("sessions", () => {
  it("appends messages and lists them in order", async () => {
    const c = sdk(t.url);
    const messages = (session_id: string) => ({ params: { path: { session_id } } });
    const a = await c.api.POST("/v1/sessions/{session_id}/messages", { ...messages("sess-1"), body: { role: "user", content: "first" } });
    expect(a.response.status).toBe(200);
    expect(a.data).toMatchObject({ role: "user", content: "first", ts_ms: expect.any(Number) });
    const b = await c.api.POST("/v1/sessions/{session_id}/messages", { ...messages("sess-1"), body: { role: "assistant", content: "second" } });
    expect(b.response.status).toBe(200);
    const list = await c.api.GET("/v1/sessions/{session_id}/messages", messages("sess-1"));
    expect(list.response.status).toBe(200);
    expect(list.data).toEqual([a.data, b.data]);
  });

  it("an unknown session is []", async () => {
    const r = await sdk(t.url).api.GET("/v1/sessions/{session_id}/messages", { params: { path: { session_id: "never-seen" } } });
    expect(r.response.status).toBe(200);
    expect(r.data).toEqual([]);
  });

  it("a traversal session id is 400", async () => {
    for (const sid of ["..", "..%2F..%2Fetc", "a..b", "%2e%2e"]) {
      const g = await request<SessionMessage[]>(t.url, `/v1/sessions/${sid}/messages`);
      expect(g.status, sid).toBe(400);
      const p = await request<SessionMessage>(t.url, `/v1/sessions/${sid}/messages`, { method: "POST", body: { role: "user", content: "x" } });
      expect(p.status, sid).toBe(400);
    }
  });

  it("an invalid message body is 400 INVALID_SPEC", async () => {
    const r = await request<SessionMessage>(t.url, "/v1/sessions/sess-2/messages", { method: "POST", body: { content: "no role" } });
    expect(r.status).toBe(400);
    expect(errorOf(r).code).toBe("INVALID_SPEC");
    expect(errorOf(r).message).toMatch(/role/);
  });
});
