// Run specs for tests: built as objects (always `sandbox: {mode: mock}` unless a test
// says otherwise) and written into a test's temp dir.
import fs from "node:fs";
import path from "node:path";
import { parseInlineSpec, SpecError } from "../../src/spec/load.js";

const MOCK = { mode: "mock" } as const;

/** A mock workflow named `name` with these steps (and any other `workflow` fields). */
export function workflow(name: string, steps: unknown[], extra: Record<string, unknown> = {}) {
  return { api_version: "v1", kind: "workflow", name, sandbox: MOCK, workflow: { steps, ...extra } };
}

/** A mock workflow of steps that each run one program with its arguments. */
export function programWorkflow(name: string, steps: Array<{ name: string; program: string; args: string[]; depends_on?: string[] }>) {
  const toStep = (s: (typeof steps)[number]) => ({
    name: s.name,
    ...(s.depends_on ? { depends_on: s.depends_on } : {}),
    run: { program: s.program, args: s.args },
  });
  return workflow(name.replace(/\W/g, "-"), steps.map(toStep));
}

let specCounter = 0;
/** Writes a spec (an object as JSON, a string as it is) into `dir`; returns its path. */
export function writeSpec(dir: string, spec: unknown, name?: string): string {
  const file = path.join(dir, name ?? `spec-${++specCounter}.json`);
  fs.writeFileSync(file, typeof spec === "string" ? spec : JSON.stringify(spec, null, 1));
  return file;
}

/** The SpecError message an inline spec is refused with (fails the test if it is accepted). */
export function inlineSpecError(spec: unknown): string {
  try {
    parseInlineSpec(spec);
  } catch (e) {
    if (e instanceof SpecError) return e.message;
    throw e;
  }
  throw new Error("the spec was accepted");
}
