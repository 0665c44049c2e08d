/**
 * Warm micro-VMs, two figures in one run (real QEMU, the daemon's guest image):
 *
 *   npx tsx bench/warm-start.ts [--claims N] [--runs N]
 *
 * 1. warm claim → first command answered: a NodeSlots + WarmPool + GatedSandbox over
 *    the QemuSandbox, as the daemon wires them; each sample waits until the pool is full
 *    and idle, then times open() (the claim) + exec(`true`). The VM is stopped after.
 * 2. examples/hello.yaml (2 steps) POST /v1/runs → terminal, on three in-process daemons
 *    in the same run, interleaved: --warm-pool 2; warm VMs off (--warm-pool 0
 *    --vm-snapshots 0: every VM boots its kernel), the goal's baseline; and --warm-pool 0
 *    with snapshots (fresh VMs restored). Each sample is taken with the warm daemon's
 *    pool full and idle (no refill boot competing for CPU).
 *
 * Writes build/bench/warm-start.json ({bench, figures: [...]}, see the README).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { NodeSlots } from "../src/engine/node-slots.js";
import { GatedSandbox } from "../src/sandbox/gated.js";
import { findGuestImage, qemuAvailable, QemuSandbox, VmSnapshots } from "../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../test/helpers/accelerator.js";
import { WarmPool } from "../src/sandbox/warm-pool.js";
import { createDaemon, type Daemon } from "../src/server.js";
import { atMost, percentile as pct, writeFigures } from "./figures.js";
import { runVmBench } from "./harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  return Number.isFinite(v) && v > 0 ? v : def;
}


async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const round = (x: number) => Math.round(x * 10) / 10;

async function claims(n: number): Promise<number[]> {
  const image = findGuestImage(root)!;
  const accelerator = await probeAccelerator({ kernel: image.kernel, initramfs: image.initramfs });
  const pidDir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-warm-"));
  // As the daemon wires it: pool VMs are restored from the shape's snapshot, then primed.
  const snapshots = new VmSnapshots(path.join(pidDir, "vm-snapshots"), 1);
  const inner = new QemuSandbox({ kernel: image.kernel, initramfs: image.initramfs, accelerator, pidDir, snapshots });
  const slots = new NodeSlots(4, 4096);
  const pool = new WarmPool({ inner, slots, size: 1 });
  const sandbox = new GatedSandbox(inner, slots, { vmBooted: () => undefined }, pool);
  const out: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      await until(() => pool.stats().ready === 1 && pool.stats().booting === 0, "the pool to fill");
      const t0 = performance.now();
      const vm = await sandbox.open({ runId: "bench", stage: "claim", attempt: i + 1, memoryMb: 256, vcpus: 1, network: false, signal: AbortSignal.timeout(30_000) });
      const r = await vm.exec({ program: "true", args: [], env: {}, stdin: Buffer.alloc(0), signal: AbortSignal.timeout(10_000) });
      const ms = performance.now() - t0;
      await vm.stop(2000);
      if (r.exitCode !== 0 || !vm.vm?.warm) throw new Error(`sample ${i + 1}: exit ${r.exitCode}, warm ${vm.vm?.warm}`);
      out.push(round(ms));
      console.log(`  claim #${i + 1}: ${ms.toFixed(1)} ms`);
    }
  } finally {
    await pool.stop(0);
    fs.rmSync(pidDir, { recursive: true, force: true });
  }
  return out;
}

async function helloRuns(n: number): Promise<{ warm: number[]; cold: number[]; restored: number[]; warmHits: number }> {
  const spec = path.join(root, "examples", "hello.yaml");
  const dirs: string[] = [];
  const start = async (warmPool: number, vmSnapshots = 4) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-hello-"));
    dirs.push(dir);
    const d = await createDaemon({ stateDir: path.join(dir, "state"), vm: { accel: "tcg" }, limits: { warmPool, vmSnapshots }, log: pino({ level: "warn" }) });
    const { url } = await d.listen("tcp://127.0.0.1:0");
    return { d, url };
  };
  const get = async (url: string, p: string) => (await fetch(url + p)).json() as Promise<any>;
  const warmD = await start(2);
  // Warm VMs off: no pool, and every VM boots its kernel (no snapshot either).
  const coldD = await start(0, 0);
  // No pool, but fresh VMs restored from snapshots (the daemon's default with --warm-pool 0).
  const restD = await start(0);
  const daemons: Daemon[] = [warmD.d, coldD.d, restD.d];
  const poolFull = async () => {
    const p = (await get(warmD.url, "/v1/health")).capacity.warm_pool;
    return p?.ready === 2 && p.booting === 0;
  };
  const one = async (url: string): Promise<number> => {
    const t0 = performance.now();
    const r = await fetch(url + "/v1/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ file: spec }) });
    const id = ((await r.json()) as { run_id: string }).run_id;
    let status = "";
    await until(async () => {
      status = (await get(url, `/v1/runs/${id}`)).status;
      return ["succeeded", "failed", "cancelled"].includes(status);
    }, `run ${id}`);
    const ms = performance.now() - t0;
    if (status !== "succeeded") throw new Error(`run ${id} ${status}`);
    return round(ms);
  };
  const warm: number[] = [];
  const cold: number[] = [];
  const restored: number[] = [];
  try {
    for (const x of [coldD, restD]) await until(async () => (await get(x.url, "/v1/health")).guest_boot === "ok", "the probes");
    await one(restD.url); // its first VM takes the snapshot the others restore from
    for (let i = 0; i < n; i++) {
      await until(poolFull, "the warm pool to fill");
      warm.push(await one(warmD.url));
      await until(poolFull, "the warm pool to refill");
      cold.push(await one(coldD.url));
      await until(poolFull, "the warm pool to refill");
      restored.push(await one(restD.url));
      console.log(`  hello #${i + 1}: warm ${warm[i]} ms, booted ${cold[i]} ms, restored ${restored[i]} ms`);
    }
    const hits = (await get(warmD.url, "/v1/health")).capacity.warm_pool.hits as number;
    return { warm, cold, restored, warmHits: hits };
  } finally {
    for (const d of daemons) await d.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  if (!qemuAvailable() || !findGuestImage(root)) {
    console.error("needs qemu-system-x86_64 and the guest image (make guest)");
    return 2;
  }
  console.log("warm claim -> first command answered");
  const c = await claims(arg("claims", 10));
  console.log("examples/hello.yaml POST -> terminal: warm pool 2; no pool, every VM booted; no pool, VMs restored from a snapshot");
  const h = await helloRuns(arg("runs", 5));
  const cp50 = pct(c, 50);
  const w50 = pct(h.warm, 50);
  const k50 = pct(h.cold, 50);
  const ratio = Math.round((w50 / k50) * 1000) / 1000;
  const figures = [
    atMost("warm claim → first command answered, p50", cp50, "ms", 50, c),
    { figure: "warm claim → first command answered, p95", value: pct(c, 95), unit: "ms" },
    atMost("examples/hello.yaml POST → terminal, warm pool, p50", w50, "ms", 250, h.warm),
    { figure: "examples/hello.yaml POST → terminal, warm VMs off (every VM boots), p50", value: k50, unit: "ms", samples: h.cold },
    atMost("examples/hello.yaml warm / warm VMs off, p50", ratio, "x", 0.15),
    { figure: "examples/hello.yaml POST → terminal, no pool, VMs restored from a snapshot, p50", value: pct(h.restored, 50), unit: "ms", samples: h.restored },
    { figure: "examples/hello.yaml warm / restored, p50", value: Math.round((w50 / pct(h.restored, 50)) * 1000) / 1000, unit: "x" },
  ];
  console.log(`\nclaim p50 ${cp50} ms p95 ${pct(c, 95)} ms; hello warm p50 ${w50} ms, booted p50 ${k50} ms, restored p50 ${pct(h.restored, 50)} ms, ratio warm/booted ${ratio}x (${h.warmHits} warm hits of ${2 * h.warm.length} stages)`);
  writeFigures("warm-start", figures);
  return 0;
}

runVmBench(main);
