/**
 * Agent runs in real micro-VMs (TCG), driven through the built daemon against a fake
 * provider on loopback (test/helpers/fake-provider.ts). The guest runs the built-in agent
 * from the test image (images/test.yaml carries what images/agent.yaml has):
 *   - Anthropic-shaped: the answer lands in the run's output and artifacts, token counts
 *     and cost in the report, and the key nowhere under the state dir nor in the log;
 *   - OpenAI-shaped over HTTPS, key from the operator's secrets file: the guest reaches
 *     the provider and nothing else (a host listener sees no connection, DNS gets no
 *     answer), and TLS is checked in the guest (an unknown CA is refused);
 *   - an error reply fails its box with the provider's message; a provider slower than
 *     the stage timeout fails the stage by the timeout, and its relay does not linger.
 * Skipped, with the reason printed, without QEMU, the guest (make guest), the built
 * daemon (npm run build) or the test image (root, mmdebstrap, erofs-utils).
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { fakeAnswer, selfSignedCert, startFakeProvider, type FakeProvider } from "../helpers/fake-provider.js";
import { ensureTestImage, linkTestImage, testImageSkipReason } from "../helpers/test-image.js";
import { MAIN_JS, REPO_ROOT, childEnv, startDaemonProcess, stopDaemon, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { waitForTerminal } from "../helpers/runs.js";
import type { RunState } from "../helpers/types.js";
import { sdk } from "../helpers/sdk.js";
import { waitFor } from "../helpers/wait.js";
import type { RunSpec } from "@voidbox/client";

const guest = findGuestImage(REPO_ROOT);
const skipReason = !qemuAvailable()
  ? "qemu-system-x86_64 not on PATH"
  : !guest
    ? "no guest image in build/guest (run: make guest)"
    : !fs.existsSync(MAIN_JS)
      ? "the daemon is not built (npm run build)"
      : testImageSkipReason();
if (skipReason) console.warn(`[test/qemu/agents] skipped: ${skipReason}`);

const KEY = "sk-ant-vbxtest-5c0ffee9d1e2a3b4c5d6";
const OPENAI_KEY = "sk-openai-vbxtest-77aa88bb99cc";
const T = 180_000;

/** Every file under dir, as bytes (the state dir is small: a few runs). */
function filesUnder(dir: string): Array<{ file: string; bytes: Buffer }> {
  const out: Array<{ file: string; bytes: Buffer }> = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name);
    if (e.isFile() && !p.endsWith(".erofs")) out.push({ file: p, bytes: fs.readFileSync(p) });
  }
  return out;
}

describe.skipIf(skipReason !== null)("agents in real micro-VMs", () => {
  const tmp = tmpDir("vbx-agents-");
  const stateDir = path.join(tmp, "state");
  const secrets = path.join(tmp, "provider-secrets");
  let daemon: DaemonProc;
  let url: string;
  let fake: FakeProvider;
  let fakeOpenai: FakeProvider;
  /** The OpenAI-shaped provider speaks HTTPS with a certificate for the guest's forward address. */
  let tls: { key: string; cert: string } | null = null;
  let forbidden: net.Server;
  let forbiddenPort = 0;
  let forbiddenHits = 0;

  beforeAll(async () => {
    await ensureTestImage();
    linkTestImage(stateDir);
    fake = await startFakeProvider({ key: KEY });
    tls = selfSignedCert("10.0.2.100", tmp);
    if (!tls) console.warn("[test/qemu/agents] openssl is missing: the OpenAI-shaped provider speaks plain HTTP, TLS is not checked");
    fakeOpenai = await startFakeProvider({ key: OPENAI_KEY, tls: tls ?? undefined });
    forbidden = net.createServer((s) => {
      forbiddenHits++;
      s.destroy();
    });
    await new Promise<void>((r) => forbidden.listen(0, "127.0.0.1", () => r()));
    forbiddenPort = (forbidden.address() as net.AddressInfo).port;
    fs.writeFileSync(secrets, `# the operator's keys\nOPENAI_API_KEY=${OPENAI_KEY}\n`, { mode: 0o600 });
    daemon = await startDaemonProcess({
      args: ["--listen", "tcp://127.0.0.1:0", "--no-auth", "--state-dir", stateDir, "--accel", "tcg", "--warm-pool", "0", "--log-level", "debug", "--provider-secrets", secrets],
      env: childEnv(tmp, { ANTHROPIC_API_KEY: KEY }),
    });
    url = daemon.urls[0];
  }, 16 * 60_000);

  afterAll(async () => {
    if (daemon) await stopDaemon(daemon);
    await fake?.close();
    await fakeOpenai?.close();
    forbidden?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  async function runSpec(spec: RunSpec): Promise<{ id: string; run: RunState }> {
    // No retries: each box is one VM (TCG boots are the cost of these tests).
    const created = await sdk(url).createRun({ spec, policy: { max_stage_retries: 0 } });
    return { id: created.run_id, run: await waitForTerminal(url, created.run_id, T - 10_000) };
  }

  it(
    "Anthropic-shaped: the answer is the run's output and artifact, tokens and cost are in the report, the key is nowhere on disk or in the log",
    async () => {
      const { id, run } = await runSpec({
        api_version: "v1",
        kind: "agent",
        name: "summarise",
        sandbox: { mode: "local", memory_mb: 256, image: "voidbox-test" },
        agent: { prompt: "summarise the repo", skills: ["agent:claude-code"], provider: { kind: "anthropic", model: "claude-3-5-haiku-latest", base_url: fake.url } },
      });
      expect(run.status, run.error ?? "").toBe("succeeded");
      const answer = fakeAnswer("anthropic", "summarise the repo");
      expect(run.report).toMatchObject({ success: true, output: `${answer}\n`, input_tokens: 1200, output_tokens: 345, total_cost_usd: 0.00234 });
      expect(fake.requests.at(-1)?.headers["x-api-key"]).toBe(KEY);
      const stage = { run_id: id, stage: "main" };
      const art = await sdk(url).api.GET("/v1/runs/{run_id}/stages/{stage}/artifacts/{name}", { params: { path: { ...stage, name: "answer.md" } }, parseAs: "text" });
      expect(art.response.status).toBe(200);
      expect(art.data).toBe(answer);
      const result = (await sdk(url).api.GET("/v1/runs/{run_id}/stages/{stage}/output-file", { params: { path: stage } })).data;
      expect(result).toMatchObject({ status: "succeeded", answer, metrics: { input_tokens: 1200, output_tokens: 345 } });
      // The key's bytes: in no file of the state dir (runs, events, artifacts), not in the daemon's output.
      const leaks = filesUnder(stateDir).filter((f) => f.bytes.includes(KEY));
      expect(leaks.map((f) => f.file)).toEqual([]);
      expect(daemon.output()).not.toContain(KEY);
    },
    T,
  );

  it(
    "OpenAI-shaped over HTTPS, key from the secrets file: the guest reaches the provider and no other host port, has no DNS, and checks the certificate",
    async () => {
      // Probes first (each must fail), then the built-in agent: one VM for both.
      const probe = [
        "import os, socket, sys",
        "def reach(host, port):",
        "    try:",
        "        socket.create_connection((host, port), timeout=3).close()",
        "        return 'connected'",
        "    except OSError as e:",
        "        return 'refused' if isinstance(e, ConnectionRefusedError) else 'failed'",
        `print('host', reach('10.0.2.2', ${forbiddenPort}), file=sys.stderr)`,
        `print('forward-other-port', reach('10.0.2.100', ${forbiddenPort}), file=sys.stderr)`,
        "print('internet', reach('1.1.1.1', 443), file=sys.stderr)",
        "try:",
        "    socket.getaddrinfo('example.com', 443)",
        "    print('dns resolved', file=sys.stderr)",
        "except OSError:",
        "    print('dns failed', file=sys.stderr)",
        // TLS is end to end and checked in the guest: a certificate from an unknown CA is refused.
        "if os.environ.get('VBX_TEST_CA'):",
        "    import subprocess",
        "    r = subprocess.run(['voidbox-agent', sys.argv[1]], capture_output=True, text=True)",
        "    print('untrusted', r.returncode, 'CERTIFICATE_VERIFY_FAILED' in r.stderr, file=sys.stderr)",
        "    open('/tmp/ca.pem', 'w').write(os.environ['VBX_TEST_CA'])",
        "    os.environ['SSL_CERT_FILE'] = '/tmp/ca.pem'",
        "os.execvp('voidbox-agent', ['voidbox-agent', sys.argv[1]])",
      ].join("\n");
      const { run } = await runSpec({
        api_version: "v1",
        kind: "agent",
        name: "tight",
        sandbox: { mode: "local", memory_mb: 256, image: "voidbox-test", network: true, env: tls ? { VBX_TEST_CA: tls.cert } : {} },
        agent: { prompt: "review", command: ["python3", "-c", probe], provider: { kind: "openai", model: "gpt-4o-mini", base_url: `${fakeOpenai.url}/v1` } },
      });
      expect(run.status, run.error ?? "").toBe("succeeded");
      expect(run.report).toMatchObject({ output: `${fakeAnswer("openai", "review")}\n`, input_tokens: 1200, output_tokens: 345, total_cost_usd: 0.000387 });
      expect(fakeOpenai.requests.at(-1)?.headers.authorization).toBe(`Bearer ${OPENAI_KEY}`);
      const stderr = run.events
        .filter((e) => e.event_type === "stage.output" && e.payload?.stream === "stderr")
        .map((e) => String(e.payload?.data ?? ""))
        .join("");
      // restrict=on answers a connection to anything but the forward with a reset (or drops it).
      expect(stderr).toMatch(new RegExp(`^host (refused|failed)\nforward-other-port (refused|failed)\ninternet (refused|failed)\ndns failed\n${tls ? "untrusted 4 True\n" : ""}$`));
      expect(forbiddenHits).toBe(0);
      expect(filesUnder(stateDir).filter((f) => f.bytes.includes(OPENAI_KEY))).toEqual([]);
      expect(daemon.output()).not.toContain(OPENAI_KEY);
    },
    T,
  );

  it(
    "an error reply fails its box with the provider's message; a provider slower than the stage timeout fails by the timeout",
    async () => {
      const provider = (model: string) => ({ kind: "anthropic" as const, model, base_url: fake.url });
      const { run } = await runSpec({
        api_version: "v1",
        kind: "pipeline",
        name: "faults",
        sandbox: { mode: "local", memory_mb: 256, image: "voidbox-test" },
        pipeline: {
          boxes: [
            { name: "broken", prompt: "x", provider: provider("error-529") },
            { name: "slow", prompt: "x", timeout_secs: 25, provider: provider("slow-600000") },
          ],
          stages: [{ type: "fan_out", boxes: ["broken", "slow"] }],
        },
      });
      expect(run.status).toBe("failed");
      const failed = new Map(run.events.filter((e) => e.event_type === "stage.failed").map((e) => [e.stage_name, String(e.payload?.error)]));
      expect(failed.get("broken")).toMatch(/exited with code 3: voidbox-agent: provider anthropic \(error-529\): HTTP 529: fake provider failure 529/);
      expect(failed.get("slow")).toBe("stage timed out after 25 s");
      expect(run.report).toMatchObject({ input_tokens: 0, output_tokens: 0, total_cost_usd: 0 });
      // The slow box's relay ends with its VM: no process of it is left.
      await waitFor(
        () => spawnSync("pgrep", ["-f", `egress-relay\\.cjs 127\\.0\\.0\\.1 ${fake.port}$`]).status !== 0,
        () => `relay processes still running: ${execFileSync("sh", ["-c", "pgrep -af egress- || true"]).toString()}`,
        10_000,
      );
    },
    T,
  );
});
