/**
 * Fresh VM → first command round trip of the QEMU sandbox: restored from a snapshot of
 * its shape (the daemon's default, "restored"), and booted.
 *
 *   npx tsx bench/boot.ts [--boots N] [--memory MB]
 *
 * Boots N tuned VMs (the image's best kernel — the minimal custom kernel when built —
 * as vmlinux via PVH + the tuned kernel command line) and N untuned VMs (the Debian
 * cloud kernel's stock bzImage + just `console=ttyS0 tsc_early_khz=<host>`, see
 * untunedKernelArgs). When the custom kernel exists, also N "cloud" VMs: the Debian
 * cloud kernel tuned exactly like "tuned" (vmlinux via PVH + tuned args), to compare
 * the custom kernel with the cloud kernel; and N "previous" VMs: the tuned setup before
 * the custom kernel (cloud vmlinux, tuned arguments without the TCG-only ones), as a
 * baseline. Strictly sequential, each variant in a block after one untimed VM, each
 * timed from spawn to the result of `true`. Prints p50/p95 of each and the ratios.
 * Every VM is stopped; a boot that does not become ready within the deadline counts
 * as a failure (and is killed).
 */
import path from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { atMost, percentile as pct, writeFigures } from "./figures.js";
import { cpuMs, runVmBench } from "./harness.js";
import { QemuSandbox, findGuestImage, killLeftoverVms, qemuAvailable, tunedKernelArgs, VmSnapshots } from "../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../test/helpers/accelerator.js";
import { findGuestKernels, untunedKernelArgs } from "./guest-kernels.js";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  return Number.isFinite(v) && v > 0 ? v : def;
}



async function main(): Promise<number> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  const boots = arg("boots", 10);
  const memoryMb = arg("memory", 512);
  const image = findGuestImage(root);
  if (!qemuAvailable()) {
    console.error("qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)");
    return 2;
  }
  if (!image) {
    console.error("no guest image in build/guest (run: make guest)");
    return 2;
  }
  const kernels = findGuestKernels(root);
  const untunedKernel = kernels.cloudBzImage?.kernel ?? image.kernel;
  const pidDir = mkdtempSync(path.join(os.tmpdir(), "vbx-bench-"));

  const tProbe = Date.now();
  const accelerator = await probeAccelerator({ kernel: image.kernel, initramfs: image.initramfs, deadlineMs: 4000 });
  console.log(`accelerator probe: ${accelerator} (${Date.now() - tProbe} ms)`);

  const sandbox = (kernel: string, kernelArgs: string[]) =>
    new QemuSandbox({ kernel, initramfs: image.initramfs, accelerator, pidDir, bootTimeoutMs: 20_000, kernelArgs });
  type Name = "restored" | "tuned" | "untuned" | "cloud" | "previous";
  // The daemon's default fresh VM: restored from a snapshot of its shape, taken by a first (untimed) boot.
  const snapshots = new VmSnapshots(path.join(pidDir, "vm-snapshots"), 1);
  const restoring = new QemuSandbox({ kernel: image.kernel, initramfs: image.initramfs, accelerator, pidDir, bootTimeoutMs: 20_000, snapshots });
  const first = await restoring.open({ runId: "bench", stage: "snapshot", attempt: 1, memoryMb, vcpus: 1, network: false, signal: AbortSignal.timeout(60_000) });
  await first.stop(2000);
  const variants = new Map<Name, QemuSandbox>([
    ["restored", restoring],
    ["tuned", sandbox(image.kernel, tunedKernelArgs(accelerator, 1, image.kernel))],
    ["untuned", sandbox(untunedKernel, untunedKernelArgs())],
  ]);
  const rel = (p: string) => path.relative(path.join(root, "build/guest"), p);
  console.log(`tuned:   ${rel(image.kernel)} (${image.kernelVersion}) + "${tunedKernelArgs(accelerator, 1, image.kernel).join(" ")}"`);
  console.log(`untuned: ${rel(untunedKernel)} (${kernels.cloudBzImage?.kernelVersion ?? image.kernelVersion}) + "${untunedKernelArgs().join(" ")}"`);
  const cloud = kernels.cloud;
  if (kernels.custom && cloud && cloud.kernel !== image.kernel && cloud.kernelVersion !== image.kernelVersion) {
    variants.set("cloud", sandbox(cloud.kernel, tunedKernelArgs(accelerator, 1, cloud.kernel)));
    console.log(`cloud:   ${rel(cloud.kernel)} (${cloud.kernelVersion}) + the tuned command line`);
  }
  // The tuned configuration before the custom kernel and the TCG-only arguments.
  const previousArgs = tunedKernelArgs("kvm", 1, image.kernel);
  if (cloud && (variants.has("cloud") || previousArgs.join(" ") !== tunedKernelArgs(accelerator, 1, image.kernel).join(" "))) {
    variants.set("previous", sandbox(cloud.kernel, previousArgs));
    console.log(`previous: ${rel(cloud.kernel)} + "${previousArgs.join(" ")}" (the earlier tuned setup, as a baseline)`);
  }
  console.log(`${boots} boots each, ${memoryMb} MiB, 1 vCPU, sequential, each variant in a block after one untimed VM`);

  const names = [...variants.keys()];
  const times = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Name, number[]>;
  const failures = Object.fromEntries(names.map((n) => [n, 0])) as Record<Name, number>;
  const cpu = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Name, number[]>;
  // Each variant in a block, after one untimed VM: on this host the first QEMU after a
  // few seconds of other work or idling costs up to ~0.6 s more CPU (a restore from a
  // snapshot on /dev/shm alike), which interleaving charged to whichever variant came first.
  for (const name of names) {
    for (let i = -1; i < boots; i++) {
      const t0 = performance.now();
      try {
        const vm = await variants.get(name)!.open({
          runId: "bench",
          stage: name,
          attempt: i + 1,
          memoryMb,
          vcpus: 1,
          network: false,
          signal: AbortSignal.timeout(20_000),
        });
        try {
          const r = await vm.exec({ program: "true", args: [], env: {}, stdin: Buffer.alloc(0), signal: AbortSignal.timeout(10_000) });
          const ms = performance.now() - t0;
          // QEMU's CPU time from spawn to the first command answered: what one fresh VM costs the host.
          const used = vm.vm ? cpuMs(vm.vm.pid) : NaN;
          if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
          if (i < 0) continue; // the untimed first VM of the block
          times[name].push(ms);
          if (Number.isFinite(used)) cpu[name].push(used);
          if (name === "restored" && !vm.vm?.restored) throw new Error("not restored from the snapshot");
          console.log(`  ${name.padEnd(8)} #${i + 1}: ${ms.toFixed(0)} ms (boot ${vm.vm?.bootMs} ms, CPU ${used} ms)`);
        } finally {
          await vm.stop(2000);
        }
      } catch (e) {
        failures[name]++;
        console.log(`  ${name.padEnd(8)} #${i + 1}: FAILED ${(e as Error).message.slice(0, 200)}`);
      }
    }
  }

  const row = (name: Name) =>
    `${name.padEnd(8)} p50 ${pct(times[name], 50).toFixed(0).padStart(5)} ms   p95 ${pct(times[name], 95).toFixed(0).padStart(5)} ms   (${times[name].length} ok, ${failures[name]} failed)`;
  console.log("\nfresh VM -> first command round trip (" + accelerator + "; restored: from a snapshot, the others boot)");
  for (const name of names) console.log(row(name));
  const ratio = (slow: Name, fast: Name) =>
    `p50 x${(pct(times[slow], 50) / pct(times[fast], 50)).toFixed(2)}, p95 x${(pct(times[slow], 95) / pct(times[fast], 95)).toFixed(2)}`;
  console.log(`speed-up untuned/tuned: ${ratio("untuned", "tuned")}`);
  console.log(`speed-up tuned boot/restore: ${ratio("tuned", "restored")}`);
  if (variants.has("cloud")) console.log(`speed-up custom/cloud kernel (both tuned): ${ratio("cloud", "tuned")}`);
  if (variants.has("previous")) console.log(`speed-up previous/tuned: ${ratio("previous", "tuned")}`);
  for (const name of names) console.log(`${name.padEnd(8)} QEMU CPU per boot (to first command): p50 ${pct(cpu[name], 50)} ms, p95 ${pct(cpu[name], 95)} ms`);
  const ms = (xs: number[]) => xs.map((x) => Math.round(x));
  writeFigures("boot", [
    atMost("fresh VM (default: snapshot restore) → first command, p50", Math.round(pct(times.restored, 50)), "ms", 500, ms(times.restored)),
    { figure: "fresh VM (default: snapshot restore) → first command, p95", value: Math.round(pct(times.restored, 95)), unit: "ms" },
    { figure: "cold kernel boot → first command, p50", value: Math.round(pct(times.tuned, 50)), unit: "ms", samples: ms(times.tuned) },
    { figure: "cold kernel boot → first command, p95", value: Math.round(pct(times.tuned, 95)), unit: "ms" },
    { figure: "QEMU CPU per fresh VM (to first command), restore, p50", value: pct(cpu.restored, 50), unit: "ms", samples: cpu.restored },
    { figure: "QEMU CPU per fresh VM (to first command), cold boot, p50", value: pct(cpu.tuned, 50), unit: "ms", samples: cpu.tuned },
  ]);
  await killLeftoverVms(pidDir);
  rmSync(pidDir, { recursive: true, force: true });
  return 0;
}

runVmBench(main);
