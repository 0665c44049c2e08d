/**
 * The small guest image of images/test.yaml, built once into build/test-images (the
 * image store is content-addressed: an unchanged image file is a lookup, so CI and
 * later runs reuse it) and linked into a test's own state dir.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildImage } from "../../src/images/build.js";
import { loadImageFile } from "../../src/images/file.js";
import { blobPath, findImage, setName } from "../../src/images/store.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TEST_IMAGE_FILE = path.join(root, "images/test.yaml");
const CACHE = path.join(root, "build/test-images");

/** Why the test image cannot be built here, or null. */
export function testImageSkipReason(): string | null {
  const req = loadImageFile(TEST_IMAGE_FILE);
  if (findImage(CACHE, req.name)) return null;
  if (process.getuid?.() !== 0) return "building the test image needs root (mmdebstrap); CI runs as root";
  for (const [tool, pkg] of [["mmdebstrap", "mmdebstrap"], ["mkfs.erofs", "erofs-utils"]]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status !== 0) return `${tool} is not installed (apt-get install ${pkg})`;
  }
  return null;
}

/** Builds (or finds) the test image; returns its name and how long it took. */
export async function ensureTestImage(): Promise<{ name: string; ms: number; reused: boolean; sizeBytes: number }> {
  const t0 = Date.now();
  const r = await buildImage(loadImageFile(TEST_IMAGE_FILE), { stateDir: CACHE, timeoutMs: 15 * 60_000 });
  return { name: r.name, ms: Date.now() - t0, reused: r.reused, sizeBytes: r.manifest.size_bytes };
}

/** Makes the test image available under `name` in `stateDir` (a hard link, else a copy). */
export function linkTestImage(stateDir: string, name = "voidbox-test"): string {
  const entry = findImage(CACHE, loadImageFile(TEST_IMAGE_FILE).name);
  if (!entry) throw new Error("the test image is not built (ensureTestImage first)");
  const dst = blobPath(stateDir, entry.key);
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  for (const [src, to] of [[entry.path, dst], [entry.path.replace(/\.erofs$/, ".json"), dst.replace(/\.erofs$/, ".json")]]) {
    if (fs.existsSync(to)) continue;
    try {
      fs.linkSync(src, to);
    } catch {
      fs.copyFileSync(src, to);
    }
  }
  setName(stateDir, name, entry.key);
  return dst;
}
