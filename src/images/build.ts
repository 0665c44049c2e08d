/**
 * `voidbox image build`: a Debian root filesystem made by mmdebstrap from Debian's
 * archive (the essential packages plus the ones asked for), packed by mkfs.erofs into
 * one read-only, lz4-compressed file in the image store (./store.ts). The guest init
 * stays in the initramfs (guest/init), which mounts this file as the stage's root, so
 * an image does not go stale when the init changes.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ensureDir } from "../store/fsutil.js";
import { blobPath, hasBlob, imagesDir, isImageName, readManifest, setName, writeManifest, type ImageFileInput, type ImageInputs, type ImageManifest } from "./store.js";

const IMAGE_FORMAT = 1;
const DEFAULT_SUITE = "bookworm";
const DEFAULT_MIRROR = "http://deb.debian.org/debian";
/** Debian package names (policy §5.6.1), optionally with an architecture qualifier. */
const PACKAGE = /^[a-z0-9][a-z0-9+.-]{1,99}(:[a-z0-9-]+)?$/;
const SUITE = /^[a-z][a-z0-9-]{1,31}$/;

export class ImageBuildError extends Error {
  override name = "ImageBuildError";
}

export interface ImageRequest {
  name: string;
  packages: string[];
  suite?: string;
  mirror?: string;
  /** Host files copied into the tree (images/*.yaml `files:`), e.g. the built-in agent program. */
  files?: ImageFile[];
}

export interface ImageFile {
  /** Host path of the content. */
  src: string;
  /** Absolute path in the image. */
  dest: string;
  /** Octal permission bits, default "0644". */
  mode?: string;
}

const FILE_DEST = /^(\/[A-Za-z0-9._+-]+)+$/;
const FILE_MODE = /^0?[0-7]{3}$/;

/** The files' inputs: destination, mode and content hash (read now, copied from these bytes). */
function fileInputs(files: ImageFile[]): { inputs: ImageFileInput[]; contents: Buffer[] } {
  const inputs: ImageFileInput[] = [];
  const contents: Buffer[] = [];
  for (const [i, f] of files.entries()) {
    if (!FILE_DEST.test(f.dest) || f.dest.split("/").some((c) => c === "." || c === "..")) throw new ImageBuildError(`files/${i}/dest: ${JSON.stringify(f.dest)} is not an absolute path in the image`);
    const mode = f.mode ?? "0644";
    if (!FILE_MODE.test(mode)) throw new ImageBuildError(`files/${i}/mode: ${JSON.stringify(mode)} is not an octal mode such as 0755`);
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(f.src);
    } catch (e) {
      throw new ImageBuildError(`files/${i}/src: cannot read ${f.src}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    inputs.push({ dest: f.dest, mode: mode.padStart(4, "0"), sha256: createHash("sha256").update(bytes).digest("hex") });
    contents.push(bytes);
  }
  return { inputs, contents };
}

/** Throws ImageBuildError naming `name` unless it is an image name (openapi.yaml's ImageName). */
export function checkImageName(name: string): void {
  if (!isImageName(name)) throw new ImageBuildError(`name: ${JSON.stringify(name)} is not an image name (lowercase letters, digits, . _ -; at most 64)`);
}

/** Checks a request and returns the inputs its key hashes; throws ImageBuildError naming the field. */
export function imageInputs(r: ImageRequest): ImageInputs {
  checkImageName(r.name);
  const bad = r.packages.find((p) => !PACKAGE.test(p));
  if (bad !== undefined) throw new ImageBuildError(`packages: ${JSON.stringify(bad)} is not a Debian package name`);
  const suite = r.suite ?? DEFAULT_SUITE;
  if (!SUITE.test(suite)) throw new ImageBuildError(`suite: ${JSON.stringify(suite)} is not a Debian suite name`);
  const mirror = r.mirror ?? DEFAULT_MIRROR;
  if (!/^(https?|file):\/\/[^\s'"]+$/.test(mirror)) throw new ImageBuildError(`mirror: ${JSON.stringify(mirror)} is not an http(s):// or file:// URL`);
  const inputs: ImageInputs = { format: IMAGE_FORMAT, suite, mirror, variant: "essential", packages: [...new Set(r.packages)].sort() };
  if (r.files?.length) inputs.files = fileInputs(r.files).inputs;
  return inputs;
}

export const imageKey = (inputs: ImageInputs) => createHash("sha256").update(JSON.stringify(inputs)).digest("hex");

export interface BuildResult {
  name: string;
  key: string;
  path: string;
  /** true when an image of the same inputs was there already (nothing was built). */
  reused: boolean;
  manifest: ImageManifest;
}

export interface BuildOptions {
  stateDir: string;
  /** Bounds the whole build (mmdebstrap's downloads included); default 30 min. */
  timeoutMs?: number;
  /** Progress lines of the tools (mmdebstrap's `I:` lines). */
  onLine?: (line: string) => void;
}

/** Builds (or finds) the image and points `name` at it. */
export async function buildImage(req: ImageRequest, o: BuildOptions): Promise<BuildResult> {
  const inputs = imageInputs(req);
  const key = imageKey(inputs);
  if (hasBlob(o.stateDir, key)) {
    setName(o.stateDir, req.name, key);
    return { name: req.name, key, path: blobPath(o.stateDir, key), reused: true, manifest: readManifest(o.stateDir, key)! };
  }
  // mmdebstrap's root mode: an unprivileged (unshare) build would leave files owned by
  // subordinate ids that mkfs.erofs, running as the same user, could not read.
  if (process.getuid?.() !== 0) throw new ImageBuildError("building an image needs root (mmdebstrap installs packages as root into the new tree); run it with sudo");
  const deadline = Date.now() + (o.timeoutMs ?? 30 * 60_000);
  const t0 = Date.now();
  ensureDir(imagesDir(o.stateDir));
  const work = path.join(imagesDir(o.stateDir), `.build-${randomBytes(6).toString("hex")}`);
  fs.mkdirSync(work, { mode: 0o700 });
  try {
    const root = path.join(work, "root");
    const manifestText = JSON.stringify({ key, ...inputs }) + "\n";
    fs.writeFileSync(path.join(work, "voidbox-image.json"), manifestText);
    // The bytes hashed into the key are the bytes copied (re-read: they match the key or the build fails).
    const files = req.files?.length ? fileInputs(req.files) : { inputs: [], contents: [] };
    if (JSON.stringify(files.inputs) !== JSON.stringify(inputs.files ?? [])) throw new ImageBuildError("files: changed while the build started; build again");
    const fileHooks = files.contents.map((bytes, i) => {
      const staged = path.join(work, `file-${i}`);
      fs.writeFileSync(staged, bytes);
      const f = files.inputs[i];
      return `--customize-hook=install -D -m ${f.mode} ${staged} "$1${f.dest}"`;
    });
    await run(
      "mmdebstrap",
      [
        "--mode=root",
        `--variant=${inputs.variant}`,
        ...(inputs.packages.length ? [`--include=${inputs.packages.join(",")}`] : []),
        "--format=directory",
        // No translated package descriptions: less to download, nothing an image uses.
        '--aptopt=Acquire::Languages "none"',
        // No fsync per unpacked file: a failed build's tree is thrown away anyway (measured ~30% faster).
        "--dpkgopt=force-unsafe-io",
        // Documentation and translations are a third of a small image and no step reads them.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        // /workspace is where the guest binds the stage's workspace.
        '--customize-hook=mkdir -p "$1/workspace"',
        `--customize-hook=cp ${path.join(work, "voidbox-image.json")} "$1/etc/voidbox-image.json"`,
        ...fileHooks,
        inputs.suite,
        root,
        inputs.mirror,
      ],
      deadline,
      o.onLine,
    );
    return await packTree(root, { name: req.name, key, inputs, t0, deadline, work }, o);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Packs a root tree into the store as `key` and points `name` at it. */
export async function packTree(
  root: string,
  p: { name: string; key: string; inputs: ImageManifest["inputs"]; t0: number; deadline: number; work: string },
  o: BuildOptions,
): Promise<BuildResult> {
  const out = path.join(p.work, "image.erofs");
  // -T0: every file's time is the epoch, so the same tree packs the same bytes.
  await run("mkfs.erofs", ["-zlz4hc", "-T0", "--quiet", out, root], p.deadline, o.onLine);
  fs.renameSync(out, blobPath(o.stateDir, p.key));
  const manifest: ImageManifest = { key: p.key, inputs: p.inputs, size_bytes: fs.statSync(blobPath(o.stateDir, p.key)).size, build_ms: Date.now() - p.t0, built_at: new Date().toISOString() };
  writeManifest(o.stateDir, manifest);
  setName(o.stateDir, p.name, p.key);
  return { name: p.name, key: p.key, path: blobPath(o.stateDir, p.key), reused: false, manifest };
}

/** Runs a tool to completion before `deadline`; its last output lines explain a failure. */
export function run(cmd: string, args: string[], deadline: number, onLine?: (l: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C.UTF-8", DEBIAN_FRONTEND: "noninteractive" } });
    const tail: string[] = [];
    let partial = "";
    const onData = (b: Buffer) => {
      const lines = (partial + b.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        tail.push(l);
        if (tail.length > 20) tail.shift();
        onLine?.(l);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new ImageBuildError(`${cmd} did not finish in time (killed)`));
    }, Math.max(0, deadline - Date.now()));
    child.on("error", (e) => {
      clearTimeout(timer);
      const missing = (e as NodeJS.ErrnoException).code === "ENOENT";
      const pkg = cmd === "mkfs.erofs" ? "erofs-utils" : cmd;
      reject(new ImageBuildError(missing ? `${cmd} is not installed (apt-get install ${pkg})` : `${cmd}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new ImageBuildError(`${cmd} failed (${signal ?? `exit code ${code}`}):\n${[...tail, partial].filter((l) => l.trim()).slice(-12).join("\n")}`));
    });
  });
}
