import { defineConfig } from "vitest/config";

// Note: vitest forces BASE_URL to "/", so targets are passed around as objects, never via env.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Child processes (daemon, Prism) are started and stopped inside each file's hooks.
    teardownTimeout: 20_000,
  },
});
