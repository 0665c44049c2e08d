// vitest globalSetup of the conformance gate: gives every test process a file to append its
// reply tally to, and at the end prints one summary line for the whole run. A violation has
// already failed its test; a violation a test swallowed (e.g. in a cleanup `.catch`) still
// fails the run here.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    conformanceDir: string;
  }
}

interface FileTally {
  file: string;
  checked: number;
  unchecked: number;
  violations: number;
  pairs: Record<string, number>;
  examples: string[];
}

export default function setup(project: TestProject) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vbx-conformance-"));
  project.provide("conformanceDir", dir);
  return () => {
    let lines: FileTally[] = [];
    try {
      lines = readFileSync(path.join(dir, "tally.jsonl"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as FileTally);
    } catch {
      // no client reply in this run
    }
    rmSync(dir, { recursive: true, force: true });
    const sum = (k: "checked" | "unchecked" | "violations") => lines.reduce((n, t) => n + t[k], 0);
    const pairs = new Set(lines.flatMap((t) => Object.keys(t.pairs)));
    const ops = new Set([...pairs].map((p) => p.split(" ")[0]));
    const violations = sum("violations");
    console.log(
      `conformance gate: ${sum("checked")} replies checked against openapi.yaml ` +
        `(${ops.size} operations, ${pairs.size} operation/status pairs), ${violations} violations` +
        (sum("unchecked") ? `; ${sum("unchecked")} replies deliberately unchecked` : ""),
    );
    if (violations > 0) {
      const examples = lines.flatMap((t) => t.examples.map((e) => `${t.file}: ${e}`)).slice(0, 10);
      throw new Error(`conformance gate: ${violations} replies violate openapi.yaml\n${examples.join("\n")}`);
    }
  };
}
