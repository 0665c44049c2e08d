/** `voidbox image build|list|rm`: the image store under the state dir, no daemon needed. */
import path from "node:path";
import { parseArgs } from "node:util";
import { defaultStateDir, type Env } from "../config.js";
import { buildImage, ImageBuildError, type ImageRequest } from "../images/build.js";
import { loadImageFile } from "../images/file.js";
import { importOciImage } from "../images/oci.js";
import { listImages, removeImage } from "../images/store.js";
import { EXIT, UsageError } from "./errors.js";

const write = (s: string) => process.stdout.write(s);
const mib = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`;

export async function imageCommand(argv: string[], env: Env): Promise<number> {
  const [sub, ...rest] = argv;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: {
        "state-dir": { type: "string" },
        packages: { type: "string" },
        file: { type: "string" },
        suite: { type: "string" },
        mirror: { type: "string" },
        json: { type: "boolean", default: false },
        quiet: { type: "boolean", default: false },
        oci: { type: "string" },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message, "image");
  }
  const { values, positionals } = parsed;
  const stateDir = path.resolve(values["state-dir"] ?? defaultStateDir(env));
  if (sub === "list") {
    if (positionals.length) throw new UsageError("voidbox image list takes no arguments", "image");
    const images = listImages(stateDir);
    if (values.json) write(JSON.stringify(images.map((i) => ({ name: i.name, path: i.path, ...i.manifest, key: i.key })), null, 2) + "\n");
    else if (!images.length) write("no images\n");
    else
      for (const i of images) {
        const from = !i.manifest ? "" : "oci" in i.manifest.inputs ? `oci ${i.manifest.inputs.oci.ref} ${i.manifest.inputs.oci.digest.slice(0, 19)}` : i.manifest.inputs.packages.join(",");
        write(`${i.name.padEnd(24)} ${i.key.slice(0, 12)}  ${i.manifest ? mib(i.manifest.size_bytes).padStart(10) : "?"}  ${from}\n`);
      }
    return EXIT.ok;
  }
  if (sub === "rm") {
    if (positionals.length !== 1) throw new UsageError("voidbox image rm takes exactly one NAME", "image");
    if (!removeImage(stateDir, positionals[0])) {
      process.stderr.write(`voidbox: no image named ${positionals[0]} in ${stateDir}\n`);
      return EXIT.failed;
    }
    write(`removed image ${positionals[0]}\n`);
    return EXIT.ok;
  }
  if (sub === "import") {
    if (positionals.length !== 1 || !values.oci) throw new UsageError("voidbox image import takes exactly one NAME and --oci LAYOUT[:TAG]", "image");
    return made(values.json, "import", "same image digest", () => importOciImage({ name: positionals[0], ref: values.oci! }, { stateDir }));
  }
  if (sub === "build") {
    return made(values.json, "build", "same inputs", () => {
      let req: ImageRequest;
      if (values.file) {
        if (positionals.length > 1) throw new UsageError("voidbox image build --file FILE takes at most one NAME", "image");
        req = loadImageFile(path.resolve(values.file));
        if (positionals[0]) req.name = positionals[0];
        if (values.packages) req.packages = [...req.packages, ...splitList(values.packages)];
      } else {
        if (positionals.length !== 1) throw new UsageError("voidbox image build takes exactly one NAME (or --file FILE)", "image");
        req = { name: positionals[0], packages: splitList(values.packages ?? "") };
      }
      if (values.suite) req.suite = values.suite;
      if (values.mirror) req.mirror = values.mirror;
      return buildImage(req, { stateDir, onLine: values.quiet ? undefined : (l) => l.startsWith("I:") && process.stderr.write(`  ${l}\n`) });
    });
  }
  throw new UsageError(`voidbox image takes build, import, list or rm${sub ? ` (got ${JSON.stringify(sub)})` : ""}`, "image");
}

type Made = Awaited<ReturnType<typeof buildImage>>;

/** Runs a build or an import and reports its image; its own failure (ImageBuildError) is exit 1 with the reason. */
async function made(json: boolean, verb: "build" | "import", reusedBecause: string, make: () => Promise<Made>): Promise<number> {
  let r: Made;
  try {
    r = await make();
  } catch (e) {
    if (!(e instanceof ImageBuildError)) throw e;
    process.stderr.write(`voidbox: image ${verb}: ${e.message}\n`);
    return EXIT.failed;
  }
  if (json) write(JSON.stringify({ name: r.name, path: r.path, reused: r.reused, ...r.manifest }, null, 2) + "\n");
  else write(`image ${r.name}: ${r.reused ? `up to date (${reusedBecause})` : `${verb === "build" ? "built" : "imported"} in ${(r.manifest.build_ms / 1000).toFixed(1)} s`}, ${mib(r.manifest.size_bytes)}, ${r.path}\n`);
  return EXIT.ok;
}

function splitList(s: string): string[] {
  return s
    .split(/[,\s]+/)
    .map((p) => p.trim())
    .filter(Boolean);
}
