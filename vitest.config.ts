import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Note: vitest forces BASE_URL to "/", so targets are passed around as objects, never via env.
export default defineConfig({
  // Tests use the SDK's source, so they need no prior build of clients/typescript.
  resolve: { alias: { "@voidbox/client": fileURLToPath(new URL("clients/typescript/src/index.ts", import.meta.url)) } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Child processes (daemon, Prism) are started and stopped inside each file's hooks.
    teardownTimeout: 20_000,
    // The reply conformance gate: per-file tallies, one summary line (and a failure on any
    // violation) at the end of the run.
    globalSetup: ["test/helpers/conformance-global.ts"],
    setupFiles: ["test/helpers/conformance-setup.ts"],
  },
});
