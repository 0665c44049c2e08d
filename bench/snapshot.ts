/**
 * What one fresh micro-VM costs: cold boot vs QEMU snapshot restore (TCG, the daemon's
 * guest image, 256 MiB, 1 vCPU).
 *
 *   npx tsx bench/snapshot.ts [--vms N]
 *
 * Snapshot: boot one guest, wait for its ready frame, run `true`, let it idle 2 s, migrate it to a file on /dev/shm
 * (QMP `migrate exec:cat > FILE`: RAM, zero pages elided, plus device state). Restore:
 * a new QEMU with the same command line plus `-incoming "exec:cat FILE"`. Both paths are
 * timed from spawn to the answer of a first command (`true`), and charged the QEMU
 * process's CPU time (user + system, /proc, 10 ms resolution) up to then. It also
 * checks that the guest channel works after a restore, and whether two VMs restored
 * from one snapshot produce the same "random" bytes (they share the RNG state the
 * snapshot froze: a restore path is only safe once the guest reseeds on restore).
 *
 * Writes build/bench/snapshot.json.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildExecScript } from "../src/sandbox/qemu/protocol.js";
import { findGuestImage, qemuAvailable } from "../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../test/helpers/accelerator.js";
import { Qmp } from "../src/sandbox/qemu/qmp.js";
import { QemuVm } from "../src/sandbox/qemu/vm.js";
import { waitFor } from "../test/helpers/wait.js";
import { percentile as pct, writeFigures } from "./figures.js";
import { cpuMs, runVmBench } from "./harness.js";

const SETTLE_MS = Number(process.env.VBX_SNAPSHOT_SETTLE_MS ?? 2000);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const image = findGuestImage(root);

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  return Number.isFinite(v) && v > 0 ? v : def;
}

/** Resolves with the first frame of `type` (or rejects at the deadline or on exit). */
function frame(vm: QemuVm, types: string[], ms: number): Promise<{ type: string; payload: Buffer; arg: number }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${types} frame within ${ms} ms: ${vm.consoleText(300)}`)), ms);
    const got: Buffer[] = [];
    vm.onFrame = (f) => {
      if (f.type === "OUT") got.push(f.payload);
      if (types.includes(f.type)) {
        clearTimeout(t);
        resolve({ type: f.type, payload: f.type === "EXIT" ? Buffer.concat(got) : f.payload, arg: f.arg });
      }
    };
    vm.onExit = (e) => reject(new Error(`QEMU exited (${e.exitCode}, ${e.signal}): ${vm.consoleText(300)}`));
  });
}

let nextId = 1;
async function run(vm: QemuVm, program: string, args: string[]): Promise<{ code: number; out: string }> {
  const id = nextId++;
  const done = frame(vm, ["EXIT"], 30_000);
  vm.send("STDIN", id, 0, Buffer.alloc(0));
  vm.send("EXEC", id, 65536, Buffer.from(buildExecScript(program, args, {})));
  const f = await done;
  return { code: f.arg, out: f.payload.toString() };
}

const base = (extraArgs: string[]) => ({
  kernel: image!.kernel,
  initramfs: image!.initramfs,
  accelerator: "tcg" as const,
  memoryMb: 256,
  vcpus: 1,
  network: false,
  runId: "bench",
  stage: "snapshot",
  extraArgs,
});

async function main(): Promise<number> {
  if (!qemuAvailable() || !image) {
    console.error("needs qemu-system-x86_64 and the guest image (make guest)");
    return 2;
  }
  const accel = await probeAccelerator({ kernel: image.kernel, initramfs: image.initramfs });
  if (accel !== "tcg") console.log("note: measuring TCG even though KVM is usable");
  const n = arg("vms", 6);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-snap-"));
  const snap = path.join("/dev/shm", `vbx-snap-${process.pid}`);
  try {
    // 1. The snapshot: a booted guest, idle at its ready frame.
    const qmpSock = path.join(dir, "qmp.sock");
    const src = await QemuVm.spawn(base(["-qmp", `unix:${qmpSock},server=on,wait=off`]));
    await frame(src, ["READY"], 60_000);
    // Idle, as a pool VM would be: one command run, then a moment for the guest's boot-time work to end.
    await run(src, "true", []);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const t0 = performance.now();
    const qmp = await Qmp.connect(qmpSock, 5000);
    try {
      await qmp.execute("migrate", { uri: `exec:cat > ${snap}` }, 5000);
      await waitFor(async () => {
        const { status } = (await qmp.execute("query-migrate", undefined, 5000)) as { status?: string };
        if (status === "failed") throw new Error("migration failed");
        return status === "completed";
      }, "the snapshot to be written", 30_000);
    } finally {
      qmp.close();
    }
    console.log(`snapshot: ${(performance.now() - t0).toFixed(0)} ms, ${(fs.statSync(snap).size / 1024 ** 2).toFixed(1)} MiB`);
    await src.stop(0);

    const cold = { ms: [] as number[], cpu: [] as number[] };
    const restored = { ms: [] as number[], cpu: [] as number[] };
    const randoms: string[] = [];
    for (let i = 0; i < n; i++) {
      let t = performance.now();
      const c = await QemuVm.spawn(base([]));
      await frame(c, ["READY"], 60_000);
      if ((await run(c, "true", [])).code !== 0) throw new Error("cold: true failed");
      cold.ms.push(Math.round(performance.now() - t));
      cold.cpu.push(cpuMs(c.pid));
      await c.stop(0);

      t = performance.now();
      const r = await QemuVm.spawn(base(["-incoming", `exec:cat ${snap}`]));
      // No READY after a restore (the guest sent it before the snapshot): the first answer is the proof.
      const res = await run(r, "true", []);
      if (res.code !== 0) throw new Error("restored: true failed");
      restored.ms.push(Math.round(performance.now() - t));
      restored.cpu.push(cpuMs(r.pid));
      await r.stop(0);
      if (i < 2) {
        // A separate restore whose very first command reads the RNG, as a stage would.
        const q = await QemuVm.spawn(base(["-incoming", `exec:cat ${snap}`]));
        randoms.push((await run(q, "sh", ["-c", "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"])).out);
        await q.stop(0);
      }
      await r.stop(0);
      console.log(`  #${i + 1}: cold ${cold.ms[i]} ms / CPU ${cold.cpu[i]} ms; restore ${restored.ms[i]} ms / CPU ${restored.cpu[i]} ms`);
    }
    const sameRandom = randoms.length === 2 && randoms[0] === randoms[1];
    console.log(`\ncold boot -> first command: p50 ${pct(cold.ms, 50)} ms, CPU p50 ${pct(cold.cpu, 50)} ms`);
    console.log(`restore   -> first command: p50 ${pct(restored.ms, 50)} ms, CPU p50 ${pct(restored.cpu, 50)} ms`);
    console.log(`two restored VMs read ${sameRandom ? "THE SAME" : "different"} bytes from /dev/urandom: ${randoms.join(" vs ")}`);
    writeFigures("snapshot", [
      { figure: "fresh VM by cold boot → first command, p50", value: pct(cold.ms, 50), unit: "ms", samples: cold.ms },
      { figure: "fresh VM by cold boot, QEMU CPU, p50", value: pct(cold.cpu, 50), unit: "ms", samples: cold.cpu },
      { figure: "fresh VM by snapshot restore → first command, p50", value: pct(restored.ms, 50), unit: "ms", samples: restored.ms },
      { figure: "fresh VM by snapshot restore, QEMU CPU, p50", value: pct(restored.cpu, 50), unit: "ms", samples: restored.cpu },
      // Different bytes in two restores do not prove restore safe (the kernel reseeds on its own schedule): no goal.
      { figure: "two fresh restores read the same /dev/urandom bytes (1 = yes)", value: sameRandom ? 1 : 0, unit: "" },
    ]);
    return 0;
  } finally {
    fs.rmSync(snap, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runVmBench(main);
