/**
 * What a stage's guest gets besides the initramfs: a root image (`sandbox.image`, a
 * read-only erofs disk on virtio-blk, see src/images/) and workspace mounts
 * (`sandbox.mounts`, ./mounts.ts). Resolved once per run, before any VM starts, so a
 * spec naming an unknown image or a refused mount fails with the reason naming the field.
 */
import { findImage, isImageName } from "../images/store.js";
import { SpecError } from "../spec/errors.js";
import type { SandboxSpec } from "../spec/types.js";
import { mountArgs, qemuOptValue, resolveMounts, type ResolvedMount } from "./mounts.js";
import type { Sandbox } from "./types.js";

export interface GuestStorage {
  /** The image's erofs file, attached read-only; absent: the initramfs is the root. */
  image?: { name: string; path: string };
  mounts: ResolvedMount[];
}

/** Throws SpecError naming `<field>/image` or `<field>/mounts/<i>/…`; undefined when the spec uses neither. */
export function resolveGuestStorage(sandbox: SandboxSpec, o: { stateDir: string; mountRoots: string[] }, field = "spec/sandbox"): GuestStorage | undefined {
  const mounts = resolveMounts(sandbox.mounts, o.mountRoots, `${field}/mounts`);
  let image: GuestStorage["image"];
  if (sandbox.image !== undefined) {
    const found = isImageName(sandbox.image) ? findImage(o.stateDir, sandbox.image) : null;
    if (!found) throw new SpecError(`${field}/image: no image named ${JSON.stringify(sandbox.image)} on this daemon (build it with: voidbox image build ${sandbox.image} --packages …; voidbox image list shows them)`);
    image = { name: found.name, path: found.path };
  }
  return image || mounts.length ? { image, mounts } : undefined;
}

/** QEMU arguments and kernel command-line words for the storage (none for undefined). */
export function storageArgs(s: GuestStorage | undefined): { qemu: string[]; kernel: string[] } {
  if (!s) return { qemu: [], kernel: [] };
  const m = mountArgs(s.mounts);
  if (!s.image) return m;
  return {
    // readonly=on: QEMU opens the file read-only, so nothing in the guest can write to it.
    qemu: ["-drive", `file=${qemuOptValue(s.image.path)},if=none,id=vbxroot,format=raw,readonly=on`, "-device", "virtio-blk-device,drive=vbxroot", ...m.qemu],
    kernel: ["voidbox.root=vda", ...m.kernel],
  };
}

/** The sandbox with `storage` added to every VM it opens. */
export function withStorage(sandbox: Sandbox, storage: GuestStorage | undefined): Sandbox {
  if (!storage) return sandbox;
  return { kind: sandbox.kind, open: (opts) => sandbox.open({ ...opts, storage }) };
}
