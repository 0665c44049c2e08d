// vitest setupFile of the conformance gate: after each test file, its process hands the
// reply tally to the run-wide summary (conformance-global.ts).
import path from "node:path";
import { afterAll, expect, inject } from "vitest";
import { flushTally } from "./conformance-tally.js";

afterAll(() => {
  flushTally(inject("conformanceDir"), path.relative(process.cwd(), expect.getState().testPath ?? "?"));
});
