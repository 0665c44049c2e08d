/**
 * Declarative image files (`images/*.yaml`):
 *
 *   name: voidbox-test
 *   suite: bookworm                         # optional, default bookworm
 *   mirror: http://deb.debian.org/debian    # optional
 *   packages: [jq]
 */
import fs from "node:fs";
import { lazyRequire } from "../lazy.js";
import { ImageBuildError, type ImageRequest } from "./build.js";

const yaml = lazyRequire<typeof import("yaml")>("yaml");
const KEYS = new Set(["name", "suite", "mirror", "packages"]);

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
  return { name: str("name", true)!, suite: str("suite", false), mirror: str("mirror", false), packages: packages as string[] };
}
