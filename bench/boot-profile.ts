/**
 * Where a cold boot's time goes (TCG, the daemon's guest image, tuned command line):
 *
 *   npx tsx bench/boot-profile.ts [--boots N]
 *
 * Per boot: host wall time spawn → READY → first command answered; the guest's
 * /proc/uptime read by that command (guest clock since the kernel started); and the
 * uptime the guest init recorded when it started (/tmp/.init-uptime). Host-side = wall at READY − guest uptime at READY (QEMU start-up, loading
 * kernel and initramfs, before the guest clock runs). Prints p50 of each part.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { findGuestImage, QemuSandbox, stopAllVms } from "../src/sandbox/qemu/index.js";
import { percentile as pct } from "./figures.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const i = process.argv.indexOf("--boots");
const boots = i >= 0 ? Number(process.argv[i + 1]) || 5 : 5;

async function main() {
  const image = findGuestImage(root)!;
  const pidDir = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-prof-"));
  const sb = new QemuSandbox({ kernel: image.kernel, initramfs: image.initramfs, accelerator: "tcg", pidDir });
  const parts: Record<string, number[]> = { "host-side (QEMU start, image load)": [], "kernel to init": [], "init to READY": [], "READY to first answer": [], total: [] };
  for (let b = 0; b < boots; b++) {
    const t0 = performance.now();
    const vm = await sb.open({ runId: "prof", stage: "boot", attempt: b + 1, memoryMb: 256, vcpus: 1, network: false, signal: AbortSignal.timeout(60_000) });
    const tReady = performance.now();
    // One command: uptime first (as close to READY as possible), then the kernel log.
    const r = await vm.exec({ program: "sh", args: ["-c", "cat /proc/uptime /tmp/.init-uptime"], env: {}, stdin: Buffer.alloc(0), signal: AbortSignal.timeout(10_000) });
    const tAnswer = performance.now();
    await vm.stop(1000);
    const out = r.stdout.toString();
    const uptimeMs = Number(out.split(/\s/)[0]) * 1000;
    // The init writes /tmp/.init-uptime first thing (images older than that: NaN).
    const initMs = Number(out.split("\n")[1]?.split(/\s/)[0]) * 1000;
    // uptime was read after READY, within the first answer: split that answer's share off by the host's view.
    const answerMs = tAnswer - tReady;
    const guestAtReady = uptimeMs - answerMs / 2;
    const host = tReady - t0 - guestAtReady;
    parts["host-side (QEMU start, image load)"].push(host);
    parts["kernel to init"].push(initMs);
    parts["init to READY"].push(guestAtReady - initMs);
    parts["READY to first answer"].push(answerMs);
    parts.total.push(tAnswer - t0);
    console.log(`  #${b + 1}: total ${(tAnswer - t0).toFixed(0)} ms, host ${host.toFixed(0)}, kernel ${initMs.toFixed(0)}, init ${(guestAtReady - initMs).toFixed(0)}, first answer ${answerMs.toFixed(0)}`);
  }
  console.log("\np50 of each part (ms):");
  for (const [k, v] of Object.entries(parts)) console.log(`  ${k.padEnd(36)} ${pct(v, 50).toFixed(0)}`);
  fs.rmSync(pidDir, { recursive: true, force: true });
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => stopAllVms(0));
