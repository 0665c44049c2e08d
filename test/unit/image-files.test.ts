/**
 * `files:` in image files (how the built-in agent program gets into an image): the
 * files' bytes, modes and destinations are part of the image's key, and bad entries are
 * refused naming the entry.
 */
import { describe, it, expect } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { imageInputs, imageKey, ImageBuildError } from "../../src/images/build.js";
import { loadImageFile } from "../../src/images/file.js";
import { tmpDir } from "../helpers/daemon.js";

describe("image files: files", () => {
  it("the key follows the files' content, mode and destination; no files keeps the old key", () => {
    const dir = tmpDir("vbx-imgfiles-");
    const src = path.join(dir, "tool");
    fs.writeFileSync(src, "#!/bin/sh\necho one\n");
    const base = { name: "a", packages: ["python3"] };
    const key = (files?: { src: string; dest: string; mode?: string }[]) => imageKey(imageInputs({ ...base, files }));
    const one = key([{ src, dest: "/usr/local/bin/tool", mode: "0755" }]);
    expect(key(undefined)).toBe(key([]));
    expect(imageInputs(base)).not.toHaveProperty("files");
    expect(one).not.toBe(key(undefined));
    expect(key([{ src, dest: "/usr/local/bin/tool", mode: "0755" }])).toBe(one);
    expect(key([{ src, dest: "/usr/local/bin/tool", mode: "0644" }])).not.toBe(one);
    expect(key([{ src, dest: "/usr/bin/tool", mode: "0755" }])).not.toBe(one);
    fs.writeFileSync(src, "#!/bin/sh\necho two\n");
    expect(key([{ src, dest: "/usr/local/bin/tool", mode: "0755" }])).not.toBe(one);
    expect(imageInputs({ ...base, files: [{ src, dest: "/t", mode: "755" }] }).files).toEqual([{ dest: "/t", mode: "0755", sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }]);
  });

  it("bad entries are refused naming the entry", () => {
    const dir = tmpDir("vbx-imgfiles-");
    const src = path.join(dir, "tool");
    fs.writeFileSync(src, "x");
    const bad = (f: { src: string; dest: string; mode?: string }) => () => imageInputs({ name: "a", packages: [], files: [{ src, dest: "/ok" }, f] });
    expect(bad({ src, dest: "relative/path" })).toThrow(/files\/1\/dest/);
    expect(bad({ src, dest: "/usr/../etc/passwd" })).toThrow(/files\/1\/dest/);
    expect(bad({ src, dest: "/a b" })).toThrow(ImageBuildError);
    expect(bad({ src, dest: "/x", mode: "rwx" })).toThrow(/files\/1\/mode/);
    expect(bad({ src: path.join(dir, "missing"), dest: "/x" })).toThrow(/files\/1\/src: cannot read .*ENOENT/);
  });

  it("an image file's files resolve src next to the file; bad shapes are refused", () => {
    const dir = tmpDir("vbx-imgfiles-");
    fs.writeFileSync(path.join(dir, "ok.yaml"), "name: a\npackages: []\nfiles:\n  - {src: bin/tool, dest: /usr/local/bin/tool, mode: \"0755\"}\n");
    expect(loadImageFile(path.join(dir, "ok.yaml")).files).toEqual([{ src: path.join(dir, "bin/tool"), dest: "/usr/local/bin/tool", mode: "0755" }]);
    fs.writeFileSync(path.join(dir, "a.yaml"), "name: a\nfiles: {src: x}\n");
    expect(() => loadImageFile(path.join(dir, "a.yaml"))).toThrow(/files must be a list/);
    fs.writeFileSync(path.join(dir, "b.yaml"), "name: a\nfiles:\n  - {src: x, dest: /x, owner: root}\n");
    expect(() => loadImageFile(path.join(dir, "b.yaml"))).toThrow(/files\/0\/owner: unknown field/);
    fs.writeFileSync(path.join(dir, "c.yaml"), "name: a\nfiles:\n  - {src: x}\n");
    expect(() => loadImageFile(path.join(dir, "c.yaml"))).toThrow(/files\/0\/dest must be a string/);
    fs.writeFileSync(path.join(dir, "d.yaml"), "name: a\nfiles:\n  - {src: x, dest: /x, mode: 755}\n");
    expect(() => loadImageFile(path.join(dir, "d.yaml"))).toThrow(/files\/0\/mode must be a string/);
  });
});
