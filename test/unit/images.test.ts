/**
 * The image store and `voidbox image`: content addressing (the same inputs are one
 * image, found without building), names as pointers, list/rm, and refusals that name
 * the field. Building itself (mmdebstrap) is covered by test/qemu/guest-images.test.ts.
 */
import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildImage, imageInputs, imageKey, ImageBuildError, type ImageRequest } from "../../src/images/build.js";
import { loadImageFile } from "../../src/images/file.js";
import { importOciImage, parseOciRef } from "../../src/images/oci.js";
import { blobPath, findImage, listImages, removeImage, writeManifest } from "../../src/images/store.js";
import { tmpDir } from "../helpers/daemon.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const main = path.join(root, "dist/src/main.js");
const cli = (args: string[]) => spawnSync(process.execPath, [main, "image", ...args], { encoding: "utf8", timeout: 30_000 });

/** An image of `packages` as if built (an empty blob and its manifest). */
function seed(stateDir: string, packages: string[], files?: ImageRequest["files"]): string {
  const inputs = imageInputs({ name: "x", packages, files });
  const key = imageKey(inputs);
  fs.mkdirSync(path.dirname(blobPath(stateDir, key)), { recursive: true });
  fs.writeFileSync(blobPath(stateDir, key), "erofs");
  writeManifest(stateDir, { key, inputs, size_bytes: 5, build_ms: 1, built_at: new Date(0).toISOString() });
  return key;
}

describe("image store", () => {
  it("the key hashes the inputs, not their order or repeats", () => {
    const a = imageKey(imageInputs({ name: "a", packages: ["jq", "git"] }));
    expect(imageKey(imageInputs({ name: "b", packages: ["git", "jq", "jq"] }))).toBe(a);
    expect(imageKey(imageInputs({ name: "a", packages: ["jq"] }))).not.toBe(a);
    expect(imageKey(imageInputs({ name: "a", packages: ["jq", "git"], suite: "trixie" }))).not.toBe(a);
  });

  it("a build of inputs already built is a lookup: the name points at the same file, nothing runs", async () => {
    const stateDir = tmpDir("vbx-images-");
    const key = seed(stateDir, ["jq"]);
    // Not root or no mmdebstrap would fail a real build: reuse never gets there.
    const r = await buildImage({ name: "tools", packages: ["jq"] }, { stateDir });
    expect(r).toMatchObject({ name: "tools", key, reused: true, path: blobPath(stateDir, key) });
    await buildImage({ name: "tools2", packages: ["jq", "jq"] }, { stateDir });
    expect(listImages(stateDir).map((i) => [i.name, i.key])).toEqual([["tools", key], ["tools2", key]]);
    // The file goes with its last name.
    expect(removeImage(stateDir, "tools")).toBe(true);
    expect(fs.existsSync(blobPath(stateDir, key))).toBe(true);
    expect(removeImage(stateDir, "tools2")).toBe(true);
    expect(fs.existsSync(blobPath(stateDir, key))).toBe(false);
    expect(findImage(stateDir, "tools2")).toBeNull();
    expect(removeImage(stateDir, "tools2")).toBe(false);
  });

  it("refuses bad names, package names, suites and mirrors, naming the field", async () => {
    const stateDir = tmpDir("vbx-images-");
    const cases: Array<[Parameters<typeof buildImage>[0], RegExp]> = [
      [{ name: "Bad Name", packages: [] }, /^name: /],
      [{ name: "ok", packages: ["jq", "rm -rf"] }, /^packages: "rm -rf" is not a Debian package name/],
      [{ name: "ok", packages: [], suite: "../x" }, /^suite: /],
      [{ name: "ok", packages: [], mirror: "ftp://x" }, /^mirror: /],
    ];
    for (const [req, msg] of cases) await expect(buildImage(req, { stateDir })).rejects.toThrow(msg);
    await expect(buildImage({ name: "Bad", packages: [] }, { stateDir })).rejects.toBeInstanceOf(ImageBuildError);
  });

  it("OCI import: LAYOUT[:TAG] (default latest); a directory that is not a layout, or an unknown tag, is refused", async () => {
    expect(parseOciRef("/x/lay:v1")).toEqual({ layout: "/x/lay", tag: "v1" });
    expect(parseOciRef("/x/lay")).toEqual({ layout: "/x/lay", tag: "latest" });
    const stateDir = tmpDir("vbx-oci-");
    const lay = tmpDir("vbx-oci-lay-");
    await expect(importOciImage({ name: "a", ref: lay }, { stateDir })).rejects.toThrow(/is not an OCI image layout/);
    const digest = `sha256:${"a".repeat(64)}`;
    fs.writeFileSync(path.join(lay, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ digest, annotations: { "org.opencontainers.image.ref.name": "v1" } }] }));
    await expect(importOciImage({ name: "a", ref: `${lay}:v2` }, { stateDir })).rejects.toThrow(/no image tagged "v2"/);
    await expect(importOciImage({ name: "A!", ref: `${lay}:v1` }, { stateDir })).rejects.toThrow(/^name: /);
  });

  it("image files: images/test.yaml loads; unknown fields and bad shapes are refused", () => {
    expect(loadImageFile(path.join(root, "images/test.yaml"))).toEqual({
      name: "voidbox-test",
      suite: "bookworm",
      mirror: undefined,
      packages: ["jq", "python3", "ca-certificates"],
      files: [{ src: path.join(root, "guest/agent/voidbox-agent"), dest: "/usr/local/bin/voidbox-agent", mode: "0755" }],
    });
    const dir = tmpDir("vbx-imgfile-");
    fs.writeFileSync(path.join(dir, "a.yaml"), "name: a\npackages: [jq]\nsize: 3\n");
    expect(() => loadImageFile(path.join(dir, "a.yaml"))).toThrow(/unknown field size/);
    fs.writeFileSync(path.join(dir, "b.yaml"), "name: b\npackages: jq\n");
    expect(() => loadImageFile(path.join(dir, "b.yaml"))).toThrow(/packages must be a list/);
  });
});

describe.skipIf(!fs.existsSync(main))("voidbox image (CLI)", () => {
  it("list, build of known inputs, rm; usage errors exit 2, refusals 1", () => {
    const stateDir = tmpDir("vbx-images-cli-");
    expect(cli(["list", "--state-dir", stateDir]).stdout).toBe("no images\n");
    const testImage = loadImageFile(path.join(root, "images/test.yaml"));
    const key = seed(stateDir, testImage.packages, testImage.files);
    const b = cli(["build", "--file", path.join(root, "images/test.yaml"), "--state-dir", stateDir, "--json"]);
    expect(b.status).toBe(0);
    expect(JSON.parse(b.stdout)).toMatchObject({ name: "voidbox-test", key, reused: true });
    const l = cli(["list", "--state-dir", stateDir, "--json"]);
    expect(JSON.parse(l.stdout)).toMatchObject([{ name: "voidbox-test", key, size_bytes: 5 }]);
    expect(cli(["rm", "voidbox-test", "--state-dir", stateDir]).status).toBe(0);
    const gone = cli(["rm", "voidbox-test", "--state-dir", stateDir]);
    expect(gone.status).toBe(1);
    expect(gone.stderr).toContain("no image named voidbox-test");
    const bad = cli(["build", "x", "--packages", "jq,NOT_A_PACKAGE", "--state-dir", stateDir]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('packages: "NOT_A_PACKAGE" is not a Debian package name');
    expect(cli(["frobnicate"]).status).toBe(2);
    expect(cli(["build", "--state-dir", stateDir]).status).toBe(2);
    expect(cli(["import", "x", "--state-dir", stateDir]).status).toBe(2);
  });
});
