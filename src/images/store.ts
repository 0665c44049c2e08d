/**
 * Guest images under `<state dir>/images/`: each built root filesystem is one read-only
 * erofs file named by the hash of its inputs (`<key>.erofs` + `<key>.json`, its
 * manifest), and each image name is a small file `names/<NAME>.json` pointing at a key.
 * Identical inputs give the same key, so a second build of them is a lookup.
 */
import fs from "node:fs";
import path from "node:path";
import { componentPattern } from "../openapi-document.js";
import { ensureDir, writeFileAtomic } from "../store/fsutil.js";

/** Image names: what `sandbox.image` and `voidbox image build NAME` accept. */
const IMAGE_NAME = componentPattern("ImageName");
/** openapi.yaml's `ImageName`: lowercase letters, digits, `.`, `_`, `-`; at most 64. */
export const isImageName = (name: string): boolean => IMAGE_NAME().test(name);

export interface ImageManifest {
  key: string;
  /** What the key hashes. */
  inputs: ImageInputs | OciInputs;
  size_bytes: number;
  build_ms: number;
  built_at: string;
}

export interface ImageInputs {
  /** Bumped when the way an image is made changes (same packages, different image). */
  format: number;
  suite: string;
  mirror: string;
  variant: string;
  packages: string[];
  /** Files added to the tree (absent when none: older images keep their key). */
  files?: ImageFileInput[];
}

/** A file an image file adds (`files:`), by content: its bytes are part of the image's key. */
export interface ImageFileInput {
  dest: string;
  mode: string;
  sha256: string;
}

/** An image imported from an OCI image layout: the key hashes the image manifest's digest. */
export interface OciInputs {
  format: number;
  oci: { digest: string; ref: string };
}

export interface ImageEntry {
  name: string;
  key: string;
  path: string;
  manifest: ImageManifest | null;
}

export const imagesDir = (stateDir: string) => path.join(stateDir, "images");
const namesDir = (stateDir: string) => path.join(imagesDir(stateDir), "names");
export const blobPath = (stateDir: string, key: string) => path.join(imagesDir(stateDir), `${key}.erofs`);
const manifestPath = (stateDir: string, key: string) => path.join(imagesDir(stateDir), `${key}.json`);

export function readManifest(stateDir: string, key: string): ImageManifest | null {
  try {
    return JSON.parse(fs.readFileSync(manifestPath(stateDir, key), "utf8")) as ImageManifest;
  } catch {
    return null;
  }
}

/** Records a finished build: the manifest next to the blob already renamed into place. */
export function writeManifest(stateDir: string, m: ImageManifest): void {
  writeFileAtomic(manifestPath(stateDir, m.key), JSON.stringify(m, null, 2) + "\n");
}

export function hasBlob(stateDir: string, key: string): boolean {
  return fs.existsSync(blobPath(stateDir, key)) && readManifest(stateDir, key) !== null;
}

export function setName(stateDir: string, name: string, key: string): void {
  ensureDir(namesDir(stateDir));
  writeFileAtomic(path.join(namesDir(stateDir), `${name}.json`), JSON.stringify({ name, key }) + "\n");
}

/** The image called `name`, or null when there is none (or its file is gone). */
export function findImage(stateDir: string, name: string): ImageEntry | null {
  if (!isImageName(name)) return null;
  let key: string;
  try {
    key = (JSON.parse(fs.readFileSync(path.join(namesDir(stateDir), `${name}.json`), "utf8")) as { key: string }).key;
  } catch {
    return null;
  }
  if (typeof key !== "string" || !/^[0-9a-f]{64}$/.test(key)) return null;
  const p = blobPath(stateDir, key);
  if (!fs.existsSync(p)) return null;
  return { name, key, path: p, manifest: readManifest(stateDir, key) };
}

export function listImages(stateDir: string): ImageEntry[] {
  let names: string[];
  try {
    names = fs.readdirSync(namesDir(stateDir)).filter((n) => n.endsWith(".json"));
  } catch {
    return [];
  }
  return names
    .map((n) => findImage(stateDir, n.slice(0, -5)))
    .filter((e): e is ImageEntry => e !== null)
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Removes the name; the image file goes too once no other name points at it. A running
 * VM keeps its open file (Linux keeps an unlinked file until it is closed).
 */
export function removeImage(stateDir: string, name: string): boolean {
  const entry = findImage(stateDir, name);
  const nameFile = path.join(namesDir(stateDir), `${name}.json`);
  if (!entry) {
    const existed = isImageName(name) && fs.existsSync(nameFile);
    if (existed) fs.rmSync(nameFile, { force: true });
    return existed;
  }
  fs.rmSync(nameFile, { force: true });
  if (!listImages(stateDir).some((e) => e.key === entry.key)) {
    fs.rmSync(blobPath(stateDir, entry.key), { force: true });
    fs.rmSync(manifestPath(stateDir, entry.key), { force: true });
  }
  return true;
}
