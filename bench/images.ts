/**
 * Guest images: build time and size of the test image (images/test.yaml, built fresh
 * into a temporary store unless --reuse), and boot → first command with the image as
 * root vs the busybox initramfs (interleaved boots, p50 of each, same run).
 *
 *   npx tsx bench/images.ts [--boots N] [--reuse]
 *
 * Needs root (mmdebstrap), mmdebstrap, erofs-utils, QEMU and `make guest`.
 * Writes build/bench/images.json.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { buildImage } from "../src/images/build.js";
import { loadImageFile } from "../src/images/file.js";
import { QemuSandbox, findGuestImage } from "../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../test/helpers/accelerator.js";
import { resolveGuestStorage, type GuestStorage } from "../src/sandbox/storage.js";
import { ensureTestImage, linkTestImage } from "../test/helpers/test-image.js";
import { atMost, percentile, writeFigures, type Figure } from "./figures.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({ options: { boots: { type: "string", default: "5" }, reuse: { type: "boolean", default: false } } });
const boots = Math.max(1, Number(values.boots));
const p50 = (xs: number[]) => percentile(xs, 50);

async function main() {
  const guest = findGuestImage(root);
  if (!guest) throw new Error("no guest image in build/guest (make guest)");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-bench-images-"));
  try {
    // Build: fresh (a private store), so the figure is a real build, not a cache hit.
    let buildMs: number;
    let sizeBytes: number;
    if (values.reuse) {
      const r = await ensureTestImage();
      [buildMs, sizeBytes] = [r.ms, r.sizeBytes];
      linkTestImage(tmp);
    } else {
      const t0 = Date.now();
      const r = await buildImage(loadImageFile(path.join(root, "images/test.yaml")), { stateDir: tmp });
      [buildMs, sizeBytes] = [Date.now() - t0, r.manifest.size_bytes];
    }
    console.log(`test image: ${values.reuse ? "reused" : "built"} in ${buildMs} ms, ${(sizeBytes / 1024 ** 2).toFixed(1)} MiB`);

    const accelerator = await probeAccelerator({ kernel: guest.kernel, initramfs: guest.initramfs, deadlineMs: 4000 });
    const sandbox = new QemuSandbox({ kernel: guest.kernel, initramfs: guest.initramfs, accelerator, pidDir: path.join(tmp, "pids"), bootTimeoutMs: 120_000 });
    const storage = resolveGuestStorage({ mode: "local", memory_mb: 256, vcpus: 1, network: false, env: {}, image: "voidbox-test" }, { stateDir: tmp, mountRoots: [] });
    const firstCommand = async (s: GuestStorage | undefined): Promise<number> => {
      const t0 = Date.now();
      const vm = await sandbox.open({ runId: "bench", stage: "images", attempt: 1, memoryMb: 256, vcpus: 1, network: false, storage: s, signal: new AbortController().signal });
      try {
        const r = await vm.exec({ program: "true", args: [], env: {}, stdin: Buffer.alloc(0), signal: new AbortController().signal });
        if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
        return Date.now() - t0;
      } finally {
        await vm.stop(2000);
      }
    };
    const initramfs: number[] = [];
    const image: number[] = [];
    for (let i = 0; i < boots; i++) {
      initramfs.push(await firstCommand(undefined));
      image.push(await firstCommand(storage));
      console.log(`boot ${i + 1}/${boots}: initramfs ${initramfs[i]} ms, image ${image[i]} ms`);
    }
    const ratio = p50(image) / p50(initramfs);
    const figures: Figure[] = [
      atMost("test image build time (mmdebstrap + mkfs.erofs; CI budget)", buildMs, "ms", 120_000),
      // A guard against accidental growth: jq alone was 52 MB; python3, CA certificates and
      // the agent (for the agent tests, so CI builds one image, not two) make ~76 MB.
      atMost("test image size (erofs, lz4hc)", Math.round((sizeBytes / 1024 ** 2) * 10) / 10, "MB", 96),
      { figure: "boot → first command, busybox initramfs (p50)", value: p50(initramfs), unit: "ms", goal: "the fastest (below the image root)", pass: p50(initramfs) <= p50(image), samples: initramfs },
      { figure: "boot → first command, image root (p50)", value: p50(image), unit: "ms", goal: "<= 2 x the initramfs", pass: ratio <= 2, samples: image },
      { figure: "image root / initramfs, boot → first command", value: Math.round(ratio * 100) / 100, unit: "x", goal: ">= 1 x (initramfs stays fastest), <= 2 x", pass: ratio >= 1 && ratio <= 2 },
    ];
    writeFigures("images", figures);
    console.log(`guest kernel ${guest.kernelVersion}, ${accelerator}`);
    for (const f of figures) console.log(`${f.pass ? "pass" : "MISS"}  ${f.figure}: ${f.value} ${f.unit} (goal ${f.goal})`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
