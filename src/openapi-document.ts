/**
 * openapi.yaml as a document: for openapi-backend, and for the schemas checked outside
 * HTTP (run specs, state files). The build writes a JSON snapshot
 * (dist/openapi.json, with the YAML's sha256): a daemon starts without parsing the
 * YAML (~100 ms of CPU on a small host, before it can answer anything). A snapshot
 * whose hash does not match the YAML is ignored.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Document } from "openapi-backend";
import { lazyRequire, once } from "./lazy.js";

/** The checkout (or installed package) root: openapi.yaml and build/guest live there. */
export const PROJECT_ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));
function findRoot(dir: string): string {
  // src/ when run from source, dist/src/ when compiled
  while (!fs.existsSync(path.join(dir, "openapi.yaml"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find openapi.yaml above " + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/** The YAML parser, loaded only when there is no snapshot to read. */
const yaml = lazyRequire<typeof import("yaml")>("yaml");
const parseYaml = (text: string, options: { maxAliasCount: number }): unknown => yaml().parse(text, options);

const SNAPSHOT = path.join("dist", "openapi.json");

interface Snapshot {
  sha256: string;
  document: Document;
}

function readYaml(root: string): { text: string; sha256: string } {
  const text = fs.readFileSync(path.join(root, "openapi.yaml"), "utf8");
  return { text, sha256: createHash("sha256").update(text).digest("hex") };
}

export function loadDefinitionFile(root: string): Document {
  const yaml = readYaml(root);
  try {
    const snap = JSON.parse(fs.readFileSync(path.join(root, SNAPSHOT), "utf8")) as Snapshot;
    if (snap.sha256 === yaml.sha256 && snap.document) return snap.document;
  } catch {
    // no snapshot (running from source) or unreadable: parse the YAML
  }
  return parseYaml(yaml.text, { maxAliasCount: -1 }) as Document;
}

/** Called by `npm run build`. */
export function writeDefinitionSnapshot(root: string): void {
  const yaml = readYaml(root);
  const snap: Snapshot = { sha256: yaml.sha256, document: parseYaml(yaml.text, { maxAliasCount: -1 }) as Document };
  fs.writeFileSync(path.join(root, SNAPSHOT), JSON.stringify(snap) + "\n");
}

/** Parsed once per process, and never changed: whoever needs to change it (openapi-backend dereferences it in place) takes a copy. */
let shared: Document | undefined;
export function apiDocument(): Document {
  shared ??= loadDefinitionFile(PROJECT_ROOT);
  return shared;
}

/** openapi.yaml's component schemas, for ajv instances that resolve `#/components/schemas/...` refs. */
export function componentSchemas(): Record<string, unknown> {
  return (apiDocument() as { components?: { schemas?: Record<string, unknown> } }).components?.schemas ?? {};
}

/** The `pattern` of a string schema in openapi.yaml, compiled on first use: a rule the code checks outside HTTP validation too. */
export function componentPattern(name: string): () => RegExp {
  return once(() => {
    const pattern = (componentSchemas()[name] as { pattern?: string } | undefined)?.pattern;
    if (!pattern) throw new Error(`openapi.yaml has no pattern for ${name}`);
    return new RegExp(pattern, "u");
  });
}
