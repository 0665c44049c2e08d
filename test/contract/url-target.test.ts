// `make conformance` hands the target to the suite through the environment (vitest forces
// BASE_URL, so VOIDBOX_CONFORMANCE_*): the URL, a token or token file, and whether it is a mock.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { urlTarget } from "../helpers/targets.js";

describe("conformance target from VOIDBOX_CONFORMANCE_URL", () => {
  it("absent → no URL target (the local targets run)", () => {
    expect(urlTarget({})).toBeUndefined();
    expect(urlTarget({ VOIDBOX_CONFORMANCE_URL: " " })).toBeUndefined();
  });

  it("a server with a token: kind url, inline fixtures, the token sent", async () => {
    const f = urlTarget({ VOIDBOX_CONFORMANCE_URL: "http://10.0.0.7:8080/", VOIDBOX_CONFORMANCE_TOKEN: "s3cret" })!;
    expect(f).toMatchObject({ kind: "url", requiresToken: true, fixtures: "inline" });
    expect(await f.start()).toMatchObject({ url: "http://10.0.0.7:8080", token: "s3cret", kind: "url" });
  });

  it("a token file is read and trimmed; no token → requests go without one", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "vbx-token-"));
    try {
      const file = path.join(dir, "token");
      writeFileSync(file, "from-file\n", { mode: 0o600 });
      const f = urlTarget({ VOIDBOX_CONFORMANCE_URL: "http://127.0.0.1:4010", VOIDBOX_CONFORMANCE_TOKEN_FILE: file })!;
      expect((await f.start()).token).toBe("from-file");
      const open = urlTarget({ VOIDBOX_CONFORMANCE_URL: "http://127.0.0.1:4010", VOIDBOX_CONFORMANCE_TOKEN: "" })!;
      expect(open.requiresToken).toBe(false);
      expect((await open.start()).token).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("MOCK=1 → the suite treats it as a spec-only mock", () => {
    expect(urlTarget({ VOIDBOX_CONFORMANCE_URL: "http://127.0.0.1:4010", VOIDBOX_CONFORMANCE_MOCK: "1" })!.kind).toBe("prism");
    expect(urlTarget({ VOIDBOX_CONFORMANCE_URL: "http://127.0.0.1:4010", VOIDBOX_CONFORMANCE_MOCK: "" })!.kind).toBe("url");
  });

  it("anything but http:// is refused with the value named", () => {
    expect(() => urlTarget({ VOIDBOX_CONFORMANCE_URL: "unix:///tmp/voidbox.sock" })).toThrow(/http:\/\/HOST:PORT, got unix/);
  });
});
