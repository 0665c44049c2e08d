/**
 * `voidbox image import NAME --oci LAYOUT[:TAG]`: an OCI image layout (a directory with
 * index.json and blobs/, e.g. from `skopeo copy docker://… oci:LAYOUT:TAG`) unpacked by
 * umoci and packed like a built image. The key is the hash of the image manifest's
 * digest, so importing the same image again is a lookup. The image must hold a
 * `/bin/sh`: steps run under it.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createHash } from "node:crypto";
import { ensureDir } from "../store/fsutil.js";
import { checkImageName, ImageBuildError, packTree, run, type BuildOptions, type BuildResult } from "./build.js";
import { blobPath, hasBlob, imagesDir, readManifest, setName, type OciInputs } from "./store.js";

const OCI_FORMAT = 1;

/** "LAYOUT[:TAG]" → the layout directory and tag (default latest). */
export function parseOciRef(ref: string): { layout: string; tag: string } {
  const m = /^(.*?)(?::([A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?$/.exec(ref)!;
  return { layout: path.resolve(m[1]), tag: m[2] ?? "latest" };
}

/** The digest of the manifest tagged `tag` in the layout's index.json. */
function ociManifestDigest(layout: string, tag: string): string {
  let index: { manifests?: Array<{ digest?: string; annotations?: Record<string, string> }> };
  try {
    index = JSON.parse(fs.readFileSync(path.join(layout, "index.json"), "utf8"));
  } catch {
    throw new ImageBuildError(`oci: ${layout} is not an OCI image layout (no readable index.json)`);
  }
  const found = (index.manifests ?? []).find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!found?.digest || !/^sha256:[0-9a-f]{64}$/.test(found.digest)) throw new ImageBuildError(`oci: no image tagged ${JSON.stringify(tag)} in ${layout}`);
  return found.digest;
}

export async function importOciImage(req: { name: string; ref: string }, o: BuildOptions): Promise<BuildResult> {
  checkImageName(req.name);
  const { layout, tag } = parseOciRef(req.ref);
  const digest = ociManifestDigest(layout, tag);
  const inputs: OciInputs = { format: OCI_FORMAT, oci: { digest, ref: tag } };
  const key = createHash("sha256").update(JSON.stringify({ format: OCI_FORMAT, digest })).digest("hex");
  if (hasBlob(o.stateDir, key)) {
    setName(o.stateDir, req.name, key);
    return { name: req.name, key, path: blobPath(o.stateDir, key), reused: true, manifest: readManifest(o.stateDir, key)! };
  }
  // Unpacked as root so files keep their owners (umoci --rootless would make them ours).
  if (process.getuid?.() !== 0) throw new ImageBuildError("importing an image needs root (umoci unpacks with the image's owners); run it with sudo");
  const t0 = Date.now();
  const deadline = t0 + (o.timeoutMs ?? 30 * 60_000);
  ensureDir(imagesDir(o.stateDir));
  const work = path.join(imagesDir(o.stateDir), `.import-${randomBytes(6).toString("hex")}`);
  fs.mkdirSync(work, { mode: 0o700 });
  try {
    const bundle = path.join(work, "bundle");
    await run("umoci", ["unpack", "--image", `${layout}:${tag}`, bundle], deadline, o.onLine);
    const root = path.join(bundle, "rootfs");
    if (!fs.existsSync(path.join(root, "bin/sh"))) throw new ImageBuildError(`oci: the image ${layout}:${tag} has no /bin/sh (steps run under it)`);
    fs.mkdirSync(path.join(root, "workspace"), { recursive: true });
    return await packTree(root, { name: req.name, key, inputs, t0, deadline, work }, o);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
