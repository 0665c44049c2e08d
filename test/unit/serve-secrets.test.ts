/**
 * `voidbox serve --provider-secrets FILE`: a missing file or one readable by group or
 * others stops the start (exit 2) with the reason, never with the file's content.
 */
import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { MAIN_JS } from "../helpers/daemon.js";
import { tmpDir } from "../helpers/daemon.js";

describe.skipIf(!fs.existsSync(MAIN_JS))("voidbox serve --provider-secrets", () => {
  it("refuses a missing or group/other-readable secrets file at start, naming the flag", () => {
    const dir = tmpDir("vbx-serve-secrets-");
    const file = path.join(dir, "secrets");
    fs.writeFileSync(file, "ANTHROPIC_API_KEY=sk-never-shown-1234\n", { mode: 0o640 });
    fs.chmodSync(file, 0o640);
    const serve = (f: string) => spawnSync(process.execPath, [MAIN_JS, "serve", "--state-dir", path.join(dir, "state"), "--provider-secrets", f], { encoding: "utf8", timeout: 20_000 });
    const loose = serve(file);
    expect(loose.status).toBe(2);
    expect(loose.stderr).toContain(`--provider-secrets: provider secrets file ${file} is readable by group or others (mode 640); chmod 600 it`);
    expect(loose.stdout + loose.stderr).not.toContain("sk-never-shown");
    const missing = serve(path.join(dir, "nope"));
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain("cannot be read: ENOENT");
  });
});
