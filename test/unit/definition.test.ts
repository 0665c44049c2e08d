/** The openapi.yaml snapshot the build writes: used when it matches the YAML, ignored when stale. */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadDefinitionFile, writeDefinitionSnapshot } from "../../src/openapi-document.js";
import { tmpDir } from "../helpers/daemon.js";

function project(yaml: string): string {
  const root = tmpDir("vbx-def-");
  fs.mkdirSync(path.join(root, "dist"));
  fs.writeFileSync(path.join(root, "openapi.yaml"), yaml);
  return root;
}

describe("openapi definition snapshot", () => {
  it("is read instead of the YAML while the YAML is unchanged", () => {
    const root = project("openapi: 3.0.3\ninfo: {title: a, version: '1'}\npaths: {}\n");
    writeDefinitionSnapshot(root);
    const snap = JSON.parse(fs.readFileSync(path.join(root, "dist", "openapi.json"), "utf8"));
    // Mark the snapshot: only a loader that uses it can return the mark.
    snap.document.info.title = "from-snapshot";
    fs.writeFileSync(path.join(root, "dist", "openapi.json"), JSON.stringify(snap));
    expect((loadDefinitionFile(root) as { info: { title: string } }).info.title).toBe("from-snapshot");
  });

  it("is ignored once the YAML changed, and absent or corrupt snapshots fall back to the YAML", () => {
    const root = project("openapi: 3.0.3\ninfo: {title: a, version: '1'}\npaths: {}\n");
    expect((loadDefinitionFile(root) as { info: { title: string } }).info.title).toBe("a");
    writeDefinitionSnapshot(root);
    fs.writeFileSync(path.join(root, "openapi.yaml"), "openapi: 3.0.3\ninfo: {title: b, version: '1'}\npaths: {}\n");
    expect((loadDefinitionFile(root) as { info: { title: string } }).info.title).toBe("b");
    fs.writeFileSync(path.join(root, "dist", "openapi.json"), "{torn");
    expect((loadDefinitionFile(root) as { info: { title: string } }).info.title).toBe("b");
  });
});
