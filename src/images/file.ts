/**
 * Declarative image files (`images/*.yaml`):
 *
 *   name: voidbox-test
 *   suite: bookworm                         # optional, default bookworm
 *   mirror: http://deb.debian.org/debian    # optional
 *   packages: [jq]
 *   files:                                  # optional: host files added to the tree
 *     - {src: ../guest/agent/voidbox-agent, dest: /usr/local/bin/voidbox-agent, mode: "0755"}
 *
 * A file's `src` is relative to the image file; its bytes are part of the image's key.
 */
import fs from "node:fs";
import path from "node:path";
import { lazyRequire } from "../lazy.js";
import { ImageBuildError, type ImageFile, type ImageRequest } from "./build.js";

const yaml = lazyRequire<typeof import("yaml")>("yaml");
const KEYS = new Set(["name", "suite", "mirror", "packages", "files"]);
const FILE_KEYS = new Set(["src", "dest", "mode"]);

export function loadImageFile(file: string): ImageRequest {
  let raw: unknown;
  try {
    raw = yaml().parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new ImageBuildError(`image file ${file}: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new ImageBuildError(`image file ${file}: expected a mapping with name and packages`);
  const o = raw as Record<string, unknown>;
  const extra = Object.keys(o).find((k) => !KEYS.has(k));
  if (extra) throw new ImageBuildError(`image file ${file}: unknown field ${extra} (known: ${[...KEYS].join(", ")})`);
  const str = (k: string, required: boolean) => {
    const v = o[k];
    if (v === undefined && !required) return undefined;
    if (typeof v !== "string") throw new ImageBuildError(`image file ${file}: ${k} must be a string`);
    return v;
  };
  const packages = o.packages ?? [];
  if (!Array.isArray(packages) || packages.some((p) => typeof p !== "string")) throw new ImageBuildError(`image file ${file}: packages must be a list of package names`);
  const req: ImageRequest = { name: str("name", true)!, suite: str("suite", false), mirror: str("mirror", false), packages: packages as string[] };
  if (o.files !== undefined) req.files = imageFiles(file, o.files);
  return req;
}

function imageFiles(file: string, raw: unknown): ImageFile[] {
  if (!Array.isArray(raw)) throw new ImageBuildError(`image file ${file}: files must be a list of {src, dest, mode?}`);
  return raw.map((f, i) => {
    if (!f || typeof f !== "object" || Array.isArray(f)) throw new ImageBuildError(`image file ${file}: files/${i} must be a mapping {src, dest, mode?}`);
    const e = f as Record<string, unknown>;
    const extra = Object.keys(e).find((k) => !FILE_KEYS.has(k));
    if (extra) throw new ImageBuildError(`image file ${file}: files/${i}/${extra}: unknown field (known: src, dest, mode)`);
    for (const k of ["src", "dest"]) if (typeof e[k] !== "string") throw new ImageBuildError(`image file ${file}: files/${i}/${k} must be a string`);
    if (e.mode !== undefined && typeof e.mode !== "string") throw new ImageBuildError(`image file ${file}: files/${i}/mode must be a string such as "0755"`);
    return { src: path.resolve(path.dirname(file), e.src as string), dest: e.dest as string, mode: e.mode as string | undefined };
  });
}
