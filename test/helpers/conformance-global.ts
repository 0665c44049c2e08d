// vitest globalSetup of the conformance gate: gives every test process a directory to append
// its reply tally to, and at the end prints one summary line for the whole run (and sets a
// failing exit code if any reply violated the spec).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import type { Tally } from "./conformance-tally.js";

declare module "vitest" {
  export interface ProvidedContext {
    conformanceDir: string;
  }
}

export type FileTally = Tally & { file: string };

/** The run's summary line, and the failure to raise when any reply violated the spec. */
export function summarise(files: FileTally[]): { line: string; failure?: string } {
  const sum = (k: "checked" | "unchecked" | "violations") => files.reduce((n, t) => n + t[k], 0);
  const pairs = new Set(files.flatMap((t) => Object.keys(t.pairs)));
  const ops = new Set([...pairs].map((p) => p.split(" ")[0]).filter((op) => !op.startsWith("(")));
  const violations = sum("violations");
  const line =
    `conformance gate: ${sum("checked")} replies checked against openapi.yaml ` +
    `(${ops.size} operations, ${pairs.size} operation/status pairs), ${violations} violations` +
    (sum("unchecked") ? `; ${sum("unchecked")} replies deliberately unchecked` : "");
  if (violations === 0) return { line };
  const examples = files.flatMap((t) => t.examples.map((e) => `${t.file}: ${e}`)).slice(0, 10);
  return { line, failure: `conformance gate: ${violations} replies violate openapi.yaml\n${examples.join("\n")}` };
}

export default function setup(project: Pick<TestProject, "provide">) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vbx-conformance-"));
  project.provide("conformanceDir", dir);
  return () => {
    let files: FileTally[] = [];
    try {
      files = readFileSync(path.join(dir, "tally.jsonl"), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as FileTally);
    } catch {
      // no test client received a reply in this run
    }
    rmSync(dir, { recursive: true, force: true });
    const { line, failure } = summarise(files);
    console.log(line);
    if (failure) {
      // A violation has failed its test already (conformance-setup.ts); this is the backstop
      // for one that escaped, e.g. in a worker that died before its hooks ran.
      console.error(failure);
      process.exitCode = 1;
    }
  };
}
