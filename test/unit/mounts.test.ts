/**
 * Workspace mounts and guest images in specs: what is refused (no mount roots, a host
 * path outside them, a symlink out of a root, system paths in the guest, an unknown
 * image) — at create for inline specs (400 INVALID_SPEC naming the field) and as the
 * run's failure reason for spec files — and the QEMU arguments an accepted one becomes.
 */
import { describe, it, expect, afterAll } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { resolveMounts } from "../../src/sandbox/mounts.js";
import { resolveGuestStorage, storageArgs, withStorage } from "../../src/sandbox/storage.js";
import type { Sandbox, StageVmOptions } from "../../src/sandbox/types.js";
import { setName, blobPath } from "../../src/images/store.js";
import { imageInputs, imageKey } from "../../src/images/build.js";
import { SpecError } from "../../src/spec/errors.js";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { errorOf } from "../helpers/http.js";
import { sdk } from "../helpers/sdk.js";
import { waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";

const base = tmpDir("vbx-mounts-");
const root = path.join(base, "root");
const outside = path.join(base, "outside");
fs.mkdirSync(path.join(root, "src"), { recursive: true });
fs.mkdirSync(outside);
fs.symlinkSync(outside, path.join(root, "escape"));
fs.symlinkSync(path.join(root, "src"), path.join(root, "alias"));

const open: TestDaemon[] = [];
afterAll(async () => {
  for (const t of open) await t.d.close();
  fs.rmSync(base, { recursive: true, force: true });
});

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(SpecError);
    return (e as Error).message;
  }
  throw new Error("not refused");
}

describe("resolveMounts", () => {
  it("refuses every mount when the daemon has no mount roots", () => {
    expect(refusal(() => resolveMounts([{ host: path.join(root, "src"), guest: "/data" }], []))).toMatch(/^sandbox\/mounts: this daemon allows no mounts .*--mount-root/);
  });

  it("refuses a host path outside the roots, naming the field", () => {
    expect(refusal(() => resolveMounts([{ host: path.join(root, "src"), guest: "/a" }, { host: outside, guest: "/b" }], [root]))).toMatch(/^sandbox\/mounts\/1\/host: .* is not under an allowed mount root/);
  });

  it("refuses a symlink under a root that leads out of it (the real path is checked)", () => {
    const msg = refusal(() => resolveMounts([{ host: path.join(root, "escape"), guest: "/data" }], [root]));
    expect(msg).toContain("sandbox/mounts/0/host");
    expect(msg).toContain(`really ${fs.realpathSync(outside)}`);
  });

  it("says nothing about paths outside the roots (missing or not: the same refusal)", () => {
    const a = refusal(() => resolveMounts([{ host: path.join(outside, "missing"), guest: "/d" }], [root]));
    const b = refusal(() => resolveMounts([{ host: outside, guest: "/d" }], [root]));
    expect(a.replace(path.join(outside, "missing"), "X")).toBe(b.replace(outside, "X"));
  });

  it("refuses a missing host path, a file, a relative path and system or duplicate guest paths", () => {
    fs.writeFileSync(path.join(root, "file"), "x");
    expect(refusal(() => resolveMounts([{ host: path.join(root, "nope"), guest: "/d" }], [root]))).toMatch(/host: .* does not exist/);
    expect(refusal(() => resolveMounts([{ host: path.join(root, "file"), guest: "/d" }], [root]))).toMatch(/host: .* is not a directory/);
    expect(refusal(() => resolveMounts([{ host: "root/src", guest: "/d" }], [root]))).toMatch(/host: root\/src is not an absolute path/);
    for (const g of ["/", "/etc", "/usr/lib", "/tmp", "/proc/x"]) expect(refusal(() => resolveMounts([{ host: root, guest: g }], [root]))).toMatch(/\/guest: .* would cover the guest's system/);
    expect(refusal(() => resolveMounts([{ host: root, guest: "/d" }, { host: root, guest: "/d/" }], [root]))).toMatch(/mounts\/1\/guest: .* mounted twice/);
  });

  it("accepts paths under a root (also through a symlink staying in it), read-only unless readonly: false", () => {
    const r = resolveMounts(
      [
        { host: path.join(root, "alias"), guest: "/workspace/src" },
        { host: root, guest: "/data", readonly: false },
      ],
      [root],
    );
    expect(r).toEqual([
      { tag: "vbx0", host: fs.realpathSync(path.join(root, "src")), guest: "/workspace/src", readonly: true },
      { tag: "vbx1", host: fs.realpathSync(root), guest: "/data", readonly: false },
    ]);
    const args = storageArgs({ mounts: r });
    expect(args.qemu).toContain(`local,id=fsvbx0,path=${fs.realpathSync(path.join(root, "src"))},security_model=none,readonly=on`);
    expect(args.qemu).toContain(`local,id=fsvbx1,path=${fs.realpathSync(root)},security_model=none`);
    expect(args.kernel).toEqual(["voidbox.mount=vbx0:ro:/workspace/src", "voidbox.mount=vbx1:rw:/data"]);
  });
});

describe("sandbox.image", () => {
  it("an unknown image is refused naming the field; a known one attaches read-only", () => {
    const stateDir = tmpDir("vbx-img-");
    expect(refusal(() => resolveGuestStorage({ mode: "local", memory_mb: 256, vcpus: 1, network: false, env: {}, image: "py" }, { stateDir, mountRoots: [] }))).toMatch(
      /^spec\/sandbox\/image: no image named "py" on this daemon/,
    );
    const key = imageKey(imageInputs({ name: "py", packages: ["python3"] }));
    fs.mkdirSync(path.dirname(blobPath(stateDir, key)), { recursive: true });
    fs.writeFileSync(blobPath(stateDir, key), "");
    setName(stateDir, "py", key);
    const s = resolveGuestStorage({ mode: "local", memory_mb: 256, vcpus: 1, network: false, env: {}, image: "py" }, { stateDir, mountRoots: [] });
    expect(s?.image?.path).toBe(blobPath(stateDir, key));
    const args = storageArgs(s);
    expect(args.qemu).toEqual(["-drive", `file=${blobPath(stateDir, key)},if=none,id=vbxroot,format=raw,readonly=on`, "-device", "virtio-blk-device,drive=vbxroot"]);
    expect(args.kernel).toEqual(["voidbox.root=vda"]);
  });
});

describe("withStorage", () => {
  it("every VM the sandbox opens gets the run's storage; none leaves the sandbox as it was", async () => {
    const seen: StageVmOptions[] = [];
    const inner: Sandbox = { kind: "qemu", open: async (o) => (seen.push(o), {} as never) };
    expect(withStorage(inner, undefined)).toBe(inner);
    const storage = { image: { name: "py", path: "/x.erofs" }, mounts: [] };
    await withStorage(inner, storage).open({ runId: "r", stage: "s", attempt: 1, memoryMb: 64, vcpus: 1, network: false, signal: new AbortController().signal });
    expect(seen[0].storage).toBe(storage);
    expect(seen[0].stage).toBe("s");
  });
});

describe("the daemon", () => {
  const mounted = (host: string, extra: Record<string, unknown> = {}) => ({
    ...workflow("m", [{ name: "s", run: { program: "true" } }]),
    sandbox: { mode: "mock", mounts: [{ host, guest: "/data" }], ...extra },
  });

  it("inline specs: no roots, outside a root, symlink escape, unknown image → 400 INVALID_SPEC naming the field", async () => {
    const none = await startDaemon(tmpDir());
    open.push(none);
    const withRoot = await startDaemon(tmpDir(), { limits: { mountRoots: [root] } });
    open.push(withRoot);
    const cases: Array<[TestDaemon, Record<string, unknown>, RegExp]> = [
      [none, mounted(path.join(root, "src")), /^body\/spec\/sandbox\/mounts: this daemon allows no mounts/],
      [withRoot, mounted(outside), /^body\/spec\/sandbox\/mounts\/0\/host: .* is not under an allowed mount root/],
      [withRoot, mounted(path.join(root, "escape")), /^body\/spec\/sandbox\/mounts\/0\/host: .*really/],
      [withRoot, { ...workflow("i", [{ name: "s", run: { program: "true" } }]), sandbox: { mode: "mock", image: "nope" } }, /^body\/spec\/sandbox\/image: no image named "nope"/],
    ];
    for (const [t, spec, message] of cases) {
      const r = await sdk(t.url).api.POST("/v1/runs", { body: { spec } });
      expect(r.response.status).toBe(400);
      expect(errorOf(r).code).toBe("INVALID_SPEC");
      expect(errorOf(r).retryable).toBe(false);
      expect(errorOf(r).message).toMatch(message);
    }
    // Accepted under the root.
    const ok = await sdk(withRoot.url).api.POST("/v1/runs", { body: { spec: mounted(path.join(root, "src")) } });
    expect(ok.response.status).toBe(200);
  });

  it("a spec file with a refused mount: the run fails with the reason naming the field", async () => {
    const t = await startDaemon(tmpDir());
    open.push(t);
    const file = writeSpec(base, mounted(path.join(root, "src")));
    const r = await sdk(t.url).api.POST("/v1/runs", { body: { file } });
    expect(r.response.status).toBe(200);
    const run = await waitForTerminal(t.url, r.data!.run_id);
    expect(run.status).toBe("failed");
    expect(run.error).toBe(`spec ${file}: sandbox/mounts: this daemon allows no mounts (the operator sets the allowed host directories with voidbox serve --mount-root DIR)`);
  });
});
