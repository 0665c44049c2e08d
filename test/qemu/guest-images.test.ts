/**
 * Guest images and workspace mounts in real micro-VMs: the test image (images/test.yaml,
 * built once and reused by content) boots as a read-only root a stage cannot change, and
 * host directories round-trip over virtio-9p. Skipped, with the reason printed, without
 * QEMU, the guest (`make guest`), or what building the test image needs (root,
 * mmdebstrap, erofs-utils); the mount part also needs the minimal guest kernel (9p).
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { importOciImage } from "../../src/images/oci.js";
import { findImage } from "../../src/images/store.js";
import { resolveGuestStorage, type GuestStorage } from "../../src/sandbox/storage.js";
import type { ExecResult, StageVm } from "../../src/sandbox/types.js";
import { QemuSandbox, findGuestImage, killLeftoverVms, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { probeAccelerator } from "../helpers/accelerator.js";
import { ensureTestImage, linkTestImage, testImageSkipReason } from "../helpers/test-image.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const guest = findGuestImage(root);
// The minimal kernel's resolved config is next to it; the Debian cloud kernel has erofs and
// overlayfs as modules (in the initramfs) but no 9p.
const kernelConfig = (() => {
  try {
    return guest ? fs.readFileSync(path.join(path.dirname(guest.kernel), "config"), "utf8") : null;
  } catch {
    return null;
  }
})();
const has = (opt: string) => kernelConfig === null || kernelConfig.includes(`\n${opt}=y`);
const skipReason = !qemuAvailable()
  ? "qemu-system-x86_64 not on PATH"
  : !guest
    ? "no guest image in build/guest (run: make guest)"
    : !has("CONFIG_EROFS_FS")
      ? `the minimal guest kernel in ${path.dirname(guest.kernel)} predates guest images (make kernel)`
      : testImageSkipReason();
if (skipReason) console.warn(`[test/qemu/guest-images] skipped: ${skipReason}`);
const mountSkip = kernelConfig === null ? "the guest boots the Debian cloud kernel, which has no 9p (make kernel)" : !has("CONFIG_9P_FS") ? "the minimal guest kernel has no 9p (make kernel)" : null;
if (!skipReason && mountSkip) console.warn(`[test/qemu/guest-images] mount round trip skipped: ${mountSkip}`);

const ociSkip = spawnSync("umoci", ["--version"], { stdio: "ignore" }).status !== 0 ? "umoci is not installed (apt-get install umoci)" : null;
if (!skipReason && ociSkip) console.warn(`[test/qemu/guest-images] OCI import skipped: ${ociSkip}`);

const T = 120_000;
const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");

describe.skipIf(skipReason !== null)("guest images and mounts (real micro-VM)", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vbx-guest-images-"));
  const stateDir = path.join(tmp, "state");
  const pidDir = path.join(tmp, "pids");
  let sandbox: QemuSandbox;
  const opened: StageVm[] = [];

  beforeAll(async () => {
    const built = await ensureTestImage();
    console.log(`[test/qemu/guest-images] test image: ${built.reused ? "reused" : `built in ${built.ms} ms`}, ${(built.sizeBytes / 1024 ** 2).toFixed(1)} MiB`);
    linkTestImage(stateDir);
    const accelerator = await probeAccelerator({ kernel: guest!.kernel, initramfs: guest!.initramfs, deadlineMs: 4000 });
    sandbox = new QemuSandbox({ kernel: guest!.kernel, initramfs: guest!.initramfs, accelerator, pidDir, bootTimeoutMs: 90_000 });
  }, 16 * 60_000);

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((vm) => vm.stop(2000)));
    await killLeftoverVms(pidDir);
  }, T);
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function open(stage: string, storage: GuestStorage | undefined): Promise<StageVm> {
    const vm = await sandbox.open({ runId: "images", stage, attempt: 1, memoryMb: 256, vcpus: 1, network: false, storage, signal: new AbortController().signal });
    opened.push(vm);
    return vm;
  }
  const sh = (vm: StageVm, script: string): Promise<ExecResult> => vm.exec({ program: "sh", args: ["-c", script], env: {}, stdin: Buffer.alloc(0), signal: new AbortController().signal });
  const sandboxSpec = (extra: object) => ({ mode: "local" as const, memory_mb: 256, vcpus: 1, network: false, env: {}, ...extra });

  it(
    "a step runs a tool only the image has, and cannot change the image",
    async () => {
      const storage = resolveGuestStorage(sandboxSpec({ image: "voidbox-test" }), { stateDir, mountRoots: [] });
      const file = findImage(stateDir, "voidbox-test")!.path;
      const before = sha(file);
      const vm = await open("image", storage);
      // jq is in the image only (the initramfs is busybox); /bin/sh is the image's dash.
      const jq = await sh(vm, `echo '{"a":[1,2,3]}' | jq -c '.a | add'; readlink -f /bin/sh; cat /etc/debian_version`);
      expect(jq.stderr.toString()).toBe("");
      expect(jq.exitCode).toBe(0);
      const [sum, shell, debian] = jq.stdout.toString().trim().split("\n");
      expect(sum).toBe("6");
      expect(shell).toBe("/usr/bin/dash");
      expect(debian).toMatch(/^12\./);
      // Writes land in the tmpfs overlay; the disk is read-only to the guest kernel.
      const w = await sh(vm, "echo changed > /usr/bin/jq && echo overlay-write-ok; cat /sys/block/vda/ro; dd if=/dev/zero of=/dev/vda bs=512 count=1 2>/dev/null && echo disk-written || echo disk-refused");
      expect(w.stdout.toString().trim().split("\n")).toEqual(["overlay-write-ok", "1", "disk-refused"]);
      // The workspace is the run's: results written there are read back.
      await sh(vm, "echo '{\"ok\":true}' > /workspace/result.json");
      expect((await vm.readFile("result.json", 1024))?.toString()).toBe('{"ok":true}\n');
      await vm.stop(2000);
      expect(sha(file)).toBe(before);
    },
    T,
  );

  it.skipIf(mountSkip !== null)(
    "mounts (with the image as root): a read-only one cannot be written, a read-write one's writes reach the host",
    async () => {
      const hostRoot = path.join(tmp, "host");
      fs.mkdirSync(path.join(hostRoot, "ro"), { recursive: true });
      fs.mkdirSync(path.join(hostRoot, "rw"), { recursive: true });
      fs.writeFileSync(path.join(hostRoot, "ro", "input.txt"), "from the host\n");
      const storage = resolveGuestStorage(
        sandboxSpec({ image: "voidbox-test", mounts: [{ host: path.join(hostRoot, "ro"), guest: "/workspace/src" }, { host: path.join(hostRoot, "rw"), guest: "/data", readonly: false }] }),
        { stateDir, mountRoots: [hostRoot] },
      );
      const vm = await open("mounts", storage);
      const r = await sh(vm, "cat /workspace/src/input.txt; echo x > /workspace/src/new 2>/dev/null && echo ro-written || echo ro-refused; jq -n '\"from the guest\"' -r > /data/out.txt && echo rw-ok");
      expect(r.stdout.toString()).toBe("from the host\nro-refused\nrw-ok\n");
      expect(fs.existsSync(path.join(hostRoot, "ro", "new"))).toBe(false);
      expect(fs.readFileSync(path.join(hostRoot, "rw", "out.txt"), "utf8")).toBe("from the guest\n");
      // The init reads results from /workspace: a file in a mount under it is readable.
      expect((await vm.readFile("src/input.txt", 1024))?.toString()).toBe("from the host\n");
    },
    T,
  );

  it.skipIf(ociSkip !== null)(
    "an OCI image layout imports (umoci) and boots as the root; the same image again is a lookup",
    async () => {
      // A one-layer image of a static busybox, made with umoci itself (no registry needed).
      const lay = path.join(tmp, "oci");
      const bundle = path.join(tmp, "bundle");
      const umoci = (...args: string[]) => expect(spawnSync("umoci", args, { encoding: "utf8", timeout: 60_000 }).status).toBe(0);
      umoci("init", "--layout", lay);
      umoci("new", "--image", `${lay}:bb`);
      umoci("unpack", "--image", `${lay}:bb`, bundle);
      fs.mkdirSync(path.join(bundle, "rootfs/bin"), { recursive: true });
      fs.copyFileSync("/bin/busybox", path.join(bundle, "rootfs/bin/busybox"));
      fs.chmodSync(path.join(bundle, "rootfs/bin/busybox"), 0o755);
      for (const a of ["sh", "cat", "env"]) fs.symlinkSync("busybox", path.join(bundle, `rootfs/bin/${a}`));
      fs.writeFileSync(path.join(bundle, "rootfs/marker"), "from the OCI layer\n");
      umoci("repack", "--image", `${lay}:bb`, bundle);
      const first = await importOciImage({ name: "bb", ref: `${lay}:bb` }, { stateDir });
      expect(first.reused).toBe(false);
      expect((await importOciImage({ name: "bb2", ref: `${lay}:bb` }, { stateDir })).key).toBe(first.key);
      const vm = await open("oci", resolveGuestStorage(sandboxSpec({ image: "bb" }), { stateDir, mountRoots: [] }));
      const r = await sh(vm, "cat /marker; ls /");
      expect(r.exitCode).toBe(0);
      expect(r.stdout.toString()).toMatch(/^from the OCI layer\n/);
      expect(r.stdout.toString()).not.toContain("usr"); // the image's tree, not the initramfs'
    },
    T,
  );
});
