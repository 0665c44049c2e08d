// vitest setupFile of the conformance gate. A violation throws in the test client and fails
// its test; one a test caught and swallowed (e.g. a cleanup `.catch(() => undefined)`) fails
// that test here instead, or the file when it happened in a hook. After each file, its
// process hands the reply tally to the run-wide summary (conformance-global.ts).
import path from "node:path";
import { afterAll, afterEach, expect, inject } from "vitest";
import { flushTally, tally } from "./conformance-tally.js";

/** Violations already failed a test (or reported here). */
let accounted = 0;

function unreported(): string | undefined {
  const fresh = tally.violations - accounted;
  accounted = tally.violations;
  if (fresh <= 0) return undefined;
  return `${fresh} reply(s) violated openapi.yaml and the error was caught without failing:\n${tally.examples.slice(-fresh).join("\n")}`;
}

afterEach(({ task }) => {
  const failedAlready = task.result?.state === "fail";
  const problem = unreported();
  if (problem && !failedAlready) throw new Error(`conformance gate: ${problem}`);
});

afterAll(() => {
  const problem = unreported();
  flushTally(inject("conformanceDir"), path.relative(process.cwd(), expect.getState().testPath ?? "?"));
  accounted = 0;
  if (problem) throw new Error(`conformance gate (in a hook): ${problem}`);
});
