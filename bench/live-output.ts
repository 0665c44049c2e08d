/**
 * What streaming a step's output while it runs costs and gains, per guest image.
 *
 *   npx tsx bench/live-output.ts [--baseline PATH/initramfs.cpio.lz4] [--runs N]
 *
 * For this tree's guest image (build/guest) and, when given, a baseline initramfs (e.g.
 * one built before live output, whose guest sends all output after the job ends), boots
 * one VM each and measures, N times and interleaved:
 *   - exec `true`: the round trip of a command with no output (the guest's poll loop
 *     is on this path);
 *   - first output: exec start → the first onOutput call for `echo first; sleep 1`
 *     (with a guest that does not stream, that is only at the job's end);
 *   - flood: `yes | head -c 3000000` with the default 1 MiB cap, exec start → result.
 * Prints p50/p95 per image. Every VM is stopped.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { QemuSandbox, findGuestImage, killLeftoverVms, qemuAvailable } from "../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../test/helpers/accelerator.js";
import type { ExecCommand, StageVm } from "../src/sandbox/types.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const runs = Number(arg("runs") ?? 10);
const image = findGuestImage(root);
if (!qemuAvailable() || !image) {
  console.error("needs qemu-system-x86_64 and build/guest (make guest)");
  process.exit(2);
}
const images: Array<[string, string]> = [["this tree", image.initramfs]];
const baseline = arg("baseline");
if (baseline) images.push(["baseline", baseline]);

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const cmd = (program: string, args: string[], onOutput?: ExecCommand["onOutput"]): ExecCommand => ({
  program,
  args,
  env: {},
  stdin: Buffer.alloc(0),
  signal: new AbortController().signal,
  maxOutputBytes: 1024 * 1024,
  onOutput,
});

async function main(): Promise<void> {
  const pidDir = mkdtempSync(path.join(os.tmpdir(), "vbx-bench-live-"));
  const accelerator = await probeAccelerator({ kernel: image!.kernel, initramfs: image!.initramfs });
  const vms: StageVm[] = [];
  const results = images.map(() => ({ exec: [] as number[], first: [] as number[], flood: [] as number[], chunks: [] as number[] }));
  try {
    for (const [, initramfs] of images) {
      const sb = new QemuSandbox({ kernel: image!.kernel, initramfs, accelerator, pidDir });
      vms.push(await sb.open({ runId: "bench", stage: "live", attempt: 1, memoryMb: 256, vcpus: 1, network: false, signal: new AbortController().signal }));
    }
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < vms.length; i++) {
        const vm = vms[i];
        const res = results[i];
        let t = performance.now();
        await vm.exec(cmd("true", [], () => {}));
        res.exec.push(performance.now() - t);
        t = performance.now();
        let first = -1;
        await vm.exec(cmd("sh", ["-c", "echo first; sleep 1"], () => {
          if (first < 0) first = performance.now() - t;
        }));
        res.first.push(first < 0 ? performance.now() - t : first);
        let chunks = 0;
        t = performance.now();
        await vm.exec(cmd("sh", ["-c", "yes | head -c 3000000"], () => void chunks++));
        res.flood.push(performance.now() - t);
        res.chunks.push(chunks);
      }
    }
  } finally {
    await Promise.all(vms.map((vm) => vm.stop(1000)));
    await killLeftoverVms(pidDir);
    rmSync(pidDir, { recursive: true, force: true });
  }
  console.log(`accelerator ${accelerator}, ${runs} runs each`);
  images.forEach(([name], i) => {
    const r = results[i];
    const f = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(0)} ms, p95 ${pct(xs, 95).toFixed(0)} ms`;
    console.log(`${name}: exec true ${f(r.exec)}; first output ${f(r.first)} (job runs ≥ 1000 ms); flood 3 MB/1 MiB cap ${f(r.flood)}, ${pct(r.chunks, 50)} live chunks`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
