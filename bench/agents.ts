/**
 * An agent stage's overhead over its provider's own latency: a `kind: agent` run of the
 * built-in agent (test image as root, egress network, key from a secrets file) against
 * the fake provider on loopback that answers after a fixed delay. Per run: stage time
 * (engine start → end) minus the provider's time (request received → reply sent). Also,
 * interleaved in the same run, a one-step workflow running `true` on the same image:
 * what any image stage costs (boot, stop), so the rest is the agent's own share (egress
 * relay, Python start, the request).
 *
 *   npx tsx bench/agents.ts [--runs N] [--delay MS]
 *
 * Needs QEMU, `make guest` and the test image (built if missing: root, mmdebstrap).
 * Writes build/bench/agents.json.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { runEngine } from "../src/engine/index.js";
import { DEFAULT_POLICY, type EngineHooks } from "../src/engine/types.js";
import { DEFAULT_LIMITS } from "../src/limits.js";
import { QemuSandbox, findGuestImage } from "../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../test/helpers/accelerator.js";
import { resolveGuestStorage, withStorage } from "../src/sandbox/storage.js";
import type { RunSpec } from "../src/spec/types.js";
import { startFakeProvider } from "../test/helpers/fake-provider.js";
import { ensureTestImage, linkTestImage } from "../test/helpers/test-image.js";
import { atMost, percentile, writeFigures } from "./figures.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({ options: { runs: { type: "string", default: "5" }, delay: { type: "string", default: "1000" } } });
const runs = Math.max(1, Number(values.runs));
const delayMs = Math.max(0, Number(values.delay));
const p50 = (xs: number[]) => percentile(xs, 50);
const KEY = "sk-bench-0000";

async function main() {
  const guest = findGuestImage(root);
  if (!guest) throw new Error("no guest image in build/guest (make guest)");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-agents-"));
  const fake = await startFakeProvider({ key: KEY, delayMs });
  try {
    await ensureTestImage();
    linkTestImage(tmp);
    const secrets = path.join(tmp, "secrets");
    fs.writeFileSync(secrets, `ANTHROPIC_API_KEY=${KEY}\n`, { mode: 0o600 });
    const accelerator = await probeAccelerator({ kernel: guest.kernel, initramfs: guest.initramfs, deadlineMs: 4000 });
    const qemu = new QemuSandbox({ kernel: guest.kernel, initramfs: guest.initramfs, accelerator, pidDir: path.join(tmp, "pids"), bootTimeoutMs: 120_000 });
    const sandboxSpec = { mode: "local" as const, memory_mb: 256, vcpus: 1, network: false, env: {}, image: "voidbox-test" };
    const sandbox = withStorage(qemu, resolveGuestStorage(sandboxSpec, { stateDir: tmp, mountRoots: [] }));
    const hooks: EngineHooks = { event: () => {}, planStages: () => {}, stage: () => {}, vmDelta: () => {}, output: () => {} };
    const timeRun = async (spec: RunSpec): Promise<number> => {
      const t0 = performance.now();
      const r = await runEngine({ runId: "bench", spec, policy: { ...DEFAULT_POLICY, max_stage_retries: 0 }, sandbox, signal: new AbortController().signal, hooks, now: Date.now, limits: { ...DEFAULT_LIMITS, providerSecretsFile: secrets } });
      if (r.exitCode !== 0) throw new Error(`${spec.name} failed: ${r.error}`);
      return performance.now() - t0;
    };
    const agent: RunSpec = { api_version: "v1", kind: "agent", name: "agent", sandbox: sandboxSpec, agent: { prompt: "summarise", provider: { kind: "anthropic", model: "claude-3-5-haiku-latest", base_url: fake.url } } };
    const plain: RunSpec = { api_version: "v1", kind: "workflow", name: "plain", sandbox: sandboxSpec, workflow: { steps: [{ name: "main", run: { program: "true" } }] } };

    const overhead: number[] = [];
    const plainMs: number[] = [];
    const agentMs: number[] = [];
    for (let i = 0; i < runs; i++) {
      const before = fake.requests.length;
      const a = await timeRun(agent);
      if (fake.requests.length !== before + 1) throw new Error("the agent did not make exactly one provider request");
      agentMs.push(Math.round(a));
      overhead.push(Math.round(a - delayMs));
      plainMs.push(Math.round(await timeRun(plain)));
      console.log(`run ${i + 1}/${runs}: agent stage ${Math.round(a)} ms (provider ${delayMs} ms), plain image stage ${plainMs.at(-1)} ms`);
    }
    const own = agentMs.map((a, i) => a - delayMs - plainMs[i]);
    console.log(`agent stage overhead over the provider's latency, p50: ${p50(overhead)} ms; of it beyond a plain image stage: ${p50(own)} ms (${accelerator})`);
    writeFigures("agents", [
      atMost(`agent stage overhead over the provider's ${delayMs} ms latency (p50, ${accelerator}, image root)`, p50(overhead), "ms", accelerator === "kvm" ? 2000 : 15000, overhead),
      atMost("of it, beyond a plain image stage running `true` (egress relay, Python start, request; p50, same run)", p50(own), "ms", accelerator === "kvm" ? 1000 : 8000, own),
      { figure: "plain image stage running `true` (p50, same run)", value: p50(plainMs), unit: "ms", samples: plainMs },
    ]);
  } finally {
    await fake.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
