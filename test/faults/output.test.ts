// Fault suite, output rows: what one run's output, artifacts, spec file or mock
// workspace may cost the daemon. Each test names what happened before the bound.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_LIMITS, type Limits } from "../../src/limits.js";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { startDaemon, tmpDir, type TestDaemon, alive, childEnv, killHard, startDaemonProcess as spawnBuiltDaemon, stopDaemon, MAIN_JS, type DaemonProc } from "../helpers/daemon.js";
import { request } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { createRun, eventsOf, isTerminal, waitForRun, waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import type { RunState } from "../helpers/types.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const ofType = eventsOf;

/** A single-step workflow must publish a result.json: scripts start with this. */
const RESULT = 'cat > result.json <<EOF\n{"status":"ok"}\nEOF\n';
/** A mock step running a tiny shell script. */
const sh = (name: string, script: string, more: Record<string, unknown> = {}) => ({ name, run: { program: "sh", args: ["-c", script] }, ...more });

async function daemonWith(limits: Partial<Limits>): Promise<TestDaemon> {
  return startDaemon(tmpDir("vbx-faults-out-"), { limits });
}

describe("row 1: guest output is bounded per stage (mock sandbox)", () => {
  let t: TestDaemon;
  let dir: string;
  beforeAll(async () => {
    t = await daemonWith({ maxStageOutputBytes: 1000, maxOutputEvents: 50 });
    dir = tmpDir("vbx-faults-spec-");
  });
  afterAll(async () => {
    await t.d.close();
  });

  // Before: every stdout line became a log.chunk event (500 here, 1,000,000 for `yes | head`),
  // the whole stdout was kept in the report and piped on, and nothing said so.
  it("keeps max-stage-output bytes, emits at most max-output-events log.chunk lines and says what was dropped", async () => {
    const lines = Array.from({ length: 500 }, (_, i) => `line ${String(i).padStart(4, "0")}`);
    const full = lines.join("\n") + "\n";
    const spec = workflow("flood", [sh("gen", `cat > big.txt <<EOF\n${full}EOF\ncat big.txt`), sh("show", "cat big.txt", { depends_on: ["gen"] })], {
      output_step: "show",
    });
    const id = await createRun(t.url, writeSpec(dir, spec));
    const run = await waitForTerminal(t.url, id);
    expect(run.status).toBe("succeeded");

    const truncated = ofType(run, "stage.output_truncated");
    expect(truncated.map((e) => e.stage_name).sort()).toEqual(["gen", "show"]);
    for (const e of truncated) {
      expect(e.payload).toMatchObject({ stream: "stdout", kept_bytes: 1000, total_bytes: Buffer.byteLength(full), limit_bytes: 1000 });
      expect(e.event_type_v2).toBe("StageOutputTruncated");
      expect(e.level).toBe("warn");
    }
    expect(run.report!.output).toBe(full.slice(0, 1000));

    const chunks = ofType(run, "log.chunk");
    expect(chunks).toHaveLength(50);
    expect(chunks[0].message).toBe("line 0000");
    const cut = ofType(run, "log.truncated");
    expect(cut).toHaveLength(1);
    const keptLines = full.slice(0, 1000).replace(/\n$/, "").split("\n").length;
    expect(cut[0].payload).toMatchObject({ kept_lines: 50, dropped_lines: keptLines - 50, total_lines: keptLines, limit_lines: 50 });
    expect(cut[0].event_type_v2).toBe("LogTruncated");
    // The existing meaning holds: log lines after the terminal event, then log.closed last.
    const types = run.events.map((e: { event_type: string }) => e.event_type);
    expect(types.indexOf("run.finished")).toBeLessThan(types.indexOf("log.chunk"));
    expect(types[types.length - 1]).toBe("log.closed");
    expect(types.indexOf("log.truncated")).toBe(types.length - 2);
  });

  // Before: the next step's stdin was the whole stdout of its source.
  it("a step reading stdin_from gets the kept bytes", async () => {
    const full = "x".repeat(5000) + "\n";
    const spec = workflow(
      "pipe",
      [sh("gen", `cat > f <<EOF\n${full}EOF\ncat f`), { name: "digest", depends_on: ["gen"], run: { program: "sha256sum", stdin_from: "gen" } }],
      { output_step: "digest" },
    );
    const run = await waitForTerminal(t.url, await createRun(t.url, writeSpec(dir, spec)));
    expect(run.status).toBe("succeeded");
    expect(run.report!.output).toBe(`${sha256(full.slice(0, 1000))}  -\n`);
  });

  // Before: a run whose output is under the bounds was the only kind there was; it must stay untouched.
  it("a run within the bounds is unchanged (no truncation events, every line)", async () => {
    const spec = workflow("small", [sh("s", `${RESULT}echo a; echo b; echo c`)]);
    const run = await waitForTerminal(t.url, await createRun(t.url, writeSpec(dir, spec)));
    expect(run.status).toBe("succeeded");
    expect(ofType(run, "log.chunk").map((e) => e.message)).toEqual(["a", "b", "c"]);
    expect(ofType(run, "log.truncated")).toHaveLength(0);
    expect(ofType(run, "stage.output_truncated")).toHaveLength(0);
  });
});

describe("row 2: per-stage artifact quotas; main shares the output step's bytes", () => {
  let t: TestDaemon;
  let dir: string;
  const KIB = 1024;
  beforeAll(async () => {
    t = await daemonWith({ maxArtifactsPerStage: 3, maxArtifactBytesPerStage: 80 * KIB });
    dir = tmpDir("vbx-faults-spec-");
  });
  afterAll(async () => {
    await t.d.close();
  });

  // Before: the same 32 KiB file listed 10 times (one name twice) was stored 10 times under
  // the stage and copied again under `main` (the reported 15 MB × 20 → 573 MB).
  it("stores what fits the count and byte quotas once, says what was dropped, links main to the same files", async () => {
    const line = "y".repeat(1023);
    const doubling = ["cat f0 f0 > f1", "cat f1 f1 > f2", "cat f2 f2 > f3", "cat f3 f3 > f4", "cat f4 f4 > f5"];
    const listed = [
      ...Array.from({ length: 10 }, (_, i) => ({ name: `a${i}`, path: "f5" })),
      { name: "a0", path: "f0" },
      { name: "s1", path: "f0" },
      { name: "s2", path: "f0" },
    ];
    const script = [`cat > f0 <<EOF\n${line}\nEOF`, ...doubling, `cat > result.json <<EOF\n${JSON.stringify({ status: "ok", artifacts: listed })}\nEOF`].join("\n");
    const id = await createRun(t.url, writeSpec(dir, workflow("quota", [sh("gen", script)])));
    const run = await waitForTerminal(t.url, id);
    expect(run.status).toBe("succeeded");

    const dropped = ofType(run, "stage.artifacts_dropped");
    expect(dropped).toHaveLength(1);
    expect(dropped[0].event_type_v2).toBe("StageArtifactsDropped");
    const reasons = Object.fromEntries((dropped[0].payload.dropped as Array<{ name: string; reason: string }>).map((d) => [d.name, d.reason]));
    expect(reasons).toMatchObject({ a2: "over_byte_quota", a9: "over_byte_quota", a0: "duplicate_name", s2: "over_count_quota" });
    expect(dropped[0].payload).toMatchObject({ stored_count: 3, stored_bytes: 2 * 32 * KIB + KIB, max_artifacts: 3, max_artifact_bytes: 80 * KIB });

    const stageArtifacts = path.join(t.stateDir, "runs", id, "stages", "gen", "artifacts");
    const mainArtifacts = path.join(t.stateDir, "runs", id, "stages", "main", "artifacts");
    expect(fs.readdirSync(stageArtifacts).sort()).toEqual(["a0", "a1", "s1"]);
    expect(fs.readdirSync(mainArtifacts).sort()).toEqual(["a0", "a1", "s1"]);
    // Distinct inodes under the run directory: the bytes are on disk once.
    const inodes = new Map<number, number>();
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else inodes.set(fs.statSync(p).ino, fs.statSync(p).size);
      }
    };
    walk(path.join(t.stateDir, "runs", id, "stages"));
    const onDisk = [...inodes.values()].reduce((a, b) => a + b, 0);
    expect(onDisk).toBeLessThanOrEqual(80 * KIB + 4 * KIB); // artifacts + one result.json
    for (const name of ["a0", "a1", "s1"]) expect(fs.statSync(path.join(mainArtifacts, name)).ino).toBe(fs.statSync(path.join(stageArtifacts, name)).ino);

    // Served identically under both names.
    for (const p of ["output-file", "artifacts/a0", "artifacts/s1"]) {
      const a = await request(t.url, `/v1/runs/${id}/stages/gen/${p}`);
      const b = await request(t.url, `/v1/runs/${id}/stages/main/${p}`);
      expect(a.status).toBe(200);
      expect(b.status).toBe(200);
      expect(b.contentType).toBe(a.contentType);
      expect(b.bytes.equals(a.bytes)).toBe(true);
    }
    const manifest = run.artifact_publication!.manifest as Array<{ stage: string; name: string }>;
    expect(manifest.filter((m) => m.stage === "gen").map((m) => m.name).sort()).toEqual(["a0", "a1", "result.json", "s1"]);
  });
});

describe("row 3: spec files never leak content or existence; --spec-root", () => {
  let t: TestDaemon;
  let root: string;
  let outside: string;
  const SECRET = "TOPSECRET-7f3a9c";
  beforeAll(async () => {
    root = tmpDir("vbx-faults-root-");
    outside = tmpDir("vbx-faults-outside-");
    t = await daemonWith({ specRoots: [root] });
  });
  afterAll(async () => {
    await t.d.close();
  });

  async function failure(file: string): Promise<string> {
    const r = await sdk(t.url).api.POST("/v1/runs", { body: { file } });
    expect(r.response.status).toBe(200); // wire compatibility: a bad file is a failed run, not a 4xx
    const run = await waitForTerminal(t.url, r.data!.run_id);
    expect(run.status).toBe("failed");
    const parse = ofType(run, "spec.parse_failed");
    expect(parse).toHaveLength(1);
    expect(JSON.stringify(run)).not.toContain(SECRET);
    return parse[0].message.split(file).join("<FILE>");
  }

  // Before: `JSON.parse` / YAML messages quoted the file's first bytes ("Unexpected token 'T', "TOPSECRET-"...").
  it("parser errors carry line and column, never the file's content", async () => {
    const json = path.join(root, "secret.json");
    fs.writeFileSync(json, `${SECRET}:x:19000:0:99999:7:::\n`);
    expect(await failure(json)).toMatch(/not valid JSON/);
    const badJson = path.join(root, "bad.json");
    fs.writeFileSync(badJson, `{"a": 1,\n  ${SECRET} }`);
    expect(await failure(badJson)).toMatch(/not valid JSON \(at line 2, column 3\)/);
    const yaml = path.join(root, "secret.yaml");
    fs.writeFileSync(yaml, `${SECRET}: [1,\n  ${SECRET}\n`);
    expect(await failure(yaml)).toMatch(/not valid YAML: .* at line \d+, column \d+/);
    // A mapping that is not a spec: its keys are content too.
    const map = path.join(root, "keys.yaml");
    fs.writeFileSync(map, `${SECRET}: 1\nother: 2\n`);
    expect(await failure(map)).toMatch(/not a run spec/);
  });

  // Before: "cannot open spec file X: ENOENT" vs "EACCES"/"EISDIR"/"ENOTDIR" told which paths exist.
  it("one message whether the file is missing, a directory, under a non-directory, or outside the roots", async () => {
    const valid = workflow("ok", [{ name: "a", run: { program: "echo", args: ["hi"] } }]);
    const outsideValid = writeSpec(outside, valid, "valid.json");
    fs.mkdirSync(path.join(root, "adir.json"));
    fs.writeFileSync(path.join(root, "plain"), "x");
    fs.symlinkSync(outsideValid, path.join(root, "link.json"));
    const messages = new Set<string>();
    for (const f of [
      path.join(root, "missing.json"),
      path.join(root, "adir.json"),
      path.join(root, "plain", "x.json"),
      outsideValid, // exists, valid, but outside: before, it ran
      path.join(outside, "missing.json"),
      path.join(root, "link.json"), // a symlink inside the root to a file outside it
      `${root}/../${path.basename(outside)}/valid.json`, // `..` out of the root
      "/etc/shadow",
    ])
      messages.add(await failure(f));
    expect([...messages]).toEqual(["cannot open spec file <FILE>: it does not exist, is not readable, is outside the allowed spec roots or is not a regular file"]);
  });

  // Before: --spec-root was parsed but not enforced; inside the root nothing may change.
  it("a spec inside a root (also through a symlink that stays inside) runs", async () => {
    const file = writeSpec(root, workflow("inside", [sh("a", `${RESULT}echo hi`)]), "inside.json");
    fs.symlinkSync(file, path.join(root, "alias.json"));
    for (const f of [file, path.join(root, "alias.json")]) {
      const run = await waitForTerminal(t.url, await createRun(t.url, f));
      expect(run.status).toBe("succeeded");
    }
  });
});

describe("row 4: the mock sandbox has the real one's output and file-size bounds", () => {
  let t: TestDaemon;
  let dir: string;
  beforeAll(async () => {
    t = await daemonWith({ maxArtifactBytesPerStage: 1024 * 1024 });
    dir = tmpDir("vbx-faults-spec-");
  });
  afterAll(async () => {
    await t.d.close();
  });

  // Before: a 1.7 KB spec doubling a file 18 times grew the daemon by 600 MB (the workspace
  // is daemon memory) and the run succeeded.
  it("a file doubled 18 times fails with ENOSPC at the workspace bound instead of growing the daemon", async () => {
    const doublings = Array.from({ length: 18 }, (_, i) => (i % 2 === 0 ? "cat f f > g" : "cat g g > f")).join(" && ");
    const script = `cat > f <<EOF\n${"z".repeat(1023)}\nEOF\n${doublings} && cat f`;
    const id = await createRun(t.url, writeSpec(dir, workflow("double", [sh("grow", script)])));
    const run = await waitForTerminal(t.url, id);
    expect(run.status).toBe("failed");
    const failed = ofType(run, "stage.failed");
    expect(failed.length).toBeGreaterThan(0);
    expect(failed[0].payload.error).toMatch(/No space left on device/);
  });

  // Before: `cat f f f ...` built the whole concatenation in memory; now only what can be kept.
  it("stdout of a huge concatenation is capped at max-stage-output and counted", async () => {
    const names = Array(400).fill("f").join(" ");
    const spec = workflow("wide", [sh("wide", `${RESULT}cat > f <<EOF\n${"w".repeat(4095)}\nEOF\ncat ${names}`)]);
    const run = await waitForTerminal(t.url, await createRun(t.url, writeSpec(dir, spec)));
    expect(run.status).toBe("succeeded");
    const [e] = ofType(run, "stage.output_truncated");
    expect(e.payload).toMatchObject({ stream: "stdout", kept_bytes: DEFAULT_LIMITS.maxStageOutputBytes, total_bytes: 400 * 4096 });
    expect(Buffer.byteLength(run.report!.output)).toBe(DEFAULT_LIMITS.maxStageOutputBytes);
  });
});

// Real micro-VM: the guest must not ship more than the cap (one boot; the rest is mock-mode).
const image = findGuestImage(ROOT);
const qemuReady = qemuAvailable() && image !== null && fs.existsSync(MAIN_JS);
describe.skipIf(!qemuReady)(`row 1 in a micro-VM (built daemon)${qemuReady ? "" : ": skipped, needs qemu-system-x86_64, build/guest and dist/ (make guest build)"}`, () => {
  let d: DaemonProc | undefined;
  let home: string;
  beforeAll(async () => {
    home = tmpDir("vbx-faults-qemu-");
    d = await spawnBuiltDaemon({
      args: ["--listen", "tcp://127.0.0.1:0", "--no-auth", "--state-dir", path.join(home, "state"), "--max-stage-output", "64KiB", "--max-output-events", "100"],
      env: childEnv(home),
    });
  }, 60_000);
  afterAll(async () => {
    if (d) {
      await stopDaemon(d);
      await killHard(d);
    }
  });

  // Before: 2,000,000 bytes came back in one OUT frame, became 1,000,000 log.chunk events held
  // twice in memory (RSS 264 → 880 MB at 400k lines); over 16 MiB the frame was a protocol error.
  it("`yes | head -n 1000000` ships 64 KiB, reports 2,000,000 bytes and 100 log lines", async () => {
    const url = d!.urls[0];
    const spec = {
      api_version: "v1",
      kind: "workflow",
      name: "flood",
      sandbox: { mode: "local", memory_mb: 256 },
      workflow: { steps: [{ name: "flood", run: { program: "sh", args: ["-c", `echo '{"status":"ok"}' > result.json; yes | head -n 1000000`] } }] },
    };
    const file = path.join(home, "flood.json");
    fs.writeFileSync(file, JSON.stringify(spec));
    const created = await sdk(url).api.POST("/v1/runs", { body: { file } });
    expect(created.response.status).toBe(200);
    const id = created.data!.run_id;
    const run = await waitForTerminal(url, id, 120_000);
    expect(run.status, JSON.stringify(run.error)).toBe("succeeded");
    const [e] = ofType(run, "stage.output_truncated");
    expect(e.payload).toMatchObject({ stream: "stdout", kept_bytes: 65536, total_bytes: 2_000_000 });
    expect(run.report!.output).toBe("y\n".repeat(32768));
    expect(ofType(run, "log.chunk")).toHaveLength(100);
    expect(ofType(run, "log.truncated")[0].payload).toMatchObject({ kept_lines: 100, dropped_lines: 32768 - 100 });
    // Live: the kept 64 KiB as a few coalesced stage.output events (within max-output-events), in order.
    const live = ofType(run, "stage.output");
    expect(live.length).toBeGreaterThan(0);
    expect(live.length).toBeLessThanOrEqual(100);
    let at = 0;
    for (const o of live) {
      expect(o.payload).toMatchObject({ stream: "stdout", offset: at, encoding: "utf8" });
      at += o.payload.bytes;
    }
    expect(live.map((o) => o.payload.data).join("")).toBe("y\n".repeat(32768));
    const types = run.events.map((x) => x.event_type);
    expect(types.lastIndexOf("stage.output")).toBeLessThan(types.indexOf("stage.output_truncated"));
    // One attempt: no protocol error, no retry.
    expect(ofType(run, "stage.started")).toHaveLength(1);
    expect(alive(d!)).toBe(true);
  }, 180_000);

  // Before: a step's output crossed the guest channel only after the step ended, so the
  // first line appeared together with the last, after the stage's end event.
  it("a step's output is visible while it runs: `first` before `second` and before the stage ends", async () => {
    const url = d!.urls[0];
    const spec = {
      api_version: "v1",
      kind: "workflow",
      name: "live",
      sandbox: { mode: "local", memory_mb: 256 },
      workflow: { steps: [{ name: "talk", run: { program: "sh", args: ["-c", `echo '{"status":"ok"}' > result.json; echo first; sleep 3; echo second`] } }] },
    };
    const file = path.join(home, "live.json");
    fs.writeFileSync(file, JSON.stringify(spec));
    const created = await sdk(url).api.POST("/v1/runs", { body: { file } });
    expect(created.response.status).toBe(200);
    const id = created.data!.run_id;
    const text = (run: RunState) => ofType(run, "stage.output").map((o) => o.payload.data).join("");
    let run = await waitForRun(url, id, (r) => text(r).includes("first") || isTerminal(r.status), { timeoutMs: 120_000, what: "the first stage.output" });
    expect(text(run)).toBe("first\n");
    expect(ofType(run, "stage.completed")).toHaveLength(0);
    expect(ofType(run, "stage.output")[0]).toMatchObject({ stage_name: "talk", stream: "stdout", payload: { stream: "stdout", offset: 0 } });
    run = await waitForTerminal(url, id, 120_000);
    expect(run.status, JSON.stringify(run.error)).toBe("succeeded");
    expect(text(run)).toBe("first\nsecond\n");
    const types = run.events.map((x) => x.event_type);
    expect(types.lastIndexOf("stage.output")).toBeLessThan(types.indexOf("stage.completed"));
    expect(ofType(run, "log.chunk").map((c) => c.message)).toEqual(["first", "second"]);
  }, 180_000);
});
