/**
 * Workspace mounts (`sandbox.mounts`): host directories shared with the guest over
 * virtio-9p. A host path must lie under one of the operator's `--mount-root`
 * directories once every symlink in it is resolved (none configured: no mounts at all).
 *
 * QEMU's 9p server runs with `security_model=none`: files the guest creates belong to
 * the daemon's user on the host with the modes the guest gave them, no ownership is
 * stored in extended attributes, and the guest can do no more in the directory than
 * the daemon's user could. QEMU's local backend resolves every path component itself
 * without following symlinks out of the shared directory, so a symlink under the root
 * (made on the host or by the guest) cannot reach past it.
 */
import fs from "node:fs";
import path from "node:path";
import { SpecError } from "../spec/errors.js";
import type { MountSpec } from "../spec/types.js";

export interface ResolvedMount {
  /** The 9p mount tag the guest looks for (`vbx0`, `vbx1`, …). */
  tag: string;
  /** Real path on the host (symlinks resolved). */
  host: string;
  guest: string;
  readonly: boolean;
}

/** Guest paths a mount may not cover: the guest's own system and the init's files. */
const RESERVED = ["/bin", "/sbin", "/lib", "/lib64", "/usr", "/etc", "/dev", "/proc", "/sys", "/tmp", "/run", "/var", "/root", "/init"];

const inside = (dir: string, p: string) => {
  const rel = path.relative(dir, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
};

/**
 * Checks and resolves a spec's mounts; throws SpecError naming the field
 * (`<field>/<i>/host` etc.) for one that is refused.
 */
/** A mount as written: `readonly` may still be absent (the loader's default makes it true). */
type MountInput = Omit<MountSpec, "readonly"> & Partial<Pick<MountSpec, "readonly">>;

export function resolveMounts(mounts: MountInput[] | undefined, roots: string[], field = "sandbox/mounts"): ResolvedMount[] {
  if (!mounts?.length) return [];
  if (!roots.length) throw new SpecError(`${field}: this daemon allows no mounts (the operator sets the allowed host directories with voidbox serve --mount-root DIR)`);
  const realRoots = roots.flatMap((r) => {
    try {
      return [fs.realpathSync(r)];
    } catch {
      return []; // a root that does not exist allows nothing
    }
  });
  const seen = new Set<string>();
  return mounts.map((m, i) => {
    const f = `${field}/${i}`;
    const guest = path.posix.normalize(m.guest).replace(/\/+$/, "") || "/";
    if (guest === "/" || RESERVED.some((r) => inside(r, guest))) throw new SpecError(`${f}/guest: ${m.guest} would cover the guest's system (${RESERVED.join(", ")} and / are not mount points)`);
    if (seen.has(guest)) throw new SpecError(`${f}/guest: ${m.guest} is mounted twice`);
    seen.add(guest);
    if (!path.isAbsolute(m.host)) throw new SpecError(`${f}/host: ${m.host} is not an absolute path`);
    // Outside every root as written: refused before the path is looked at, so a refusal
    // does not tell whether a path outside the roots exists.
    const outside = () => new SpecError(`${f}/host: ${m.host} is not under an allowed mount root (${roots.join(", ")})`);
    if (![...roots, ...realRoots].some((r) => inside(r, path.resolve(m.host)))) throw outside();
    let real: string;
    try {
      real = fs.realpathSync(m.host);
    } catch {
      throw new SpecError(`${f}/host: ${m.host} does not exist on the daemon's host`);
    }
    if (!realRoots.some((r) => inside(r, real))) throw new SpecError(`${f}/host: ${m.host} (really ${real}) is not under an allowed mount root (${roots.join(", ")})`);
    if (!fs.statSync(real).isDirectory()) throw new SpecError(`${f}/host: ${m.host} is not a directory`);
    return { tag: `vbx${i}`, host: real, guest, readonly: m.readonly !== false };
  });
}

/** A value inside a QEMU `-fsdev`/`-drive` option list: commas are doubled. */
export const qemuOptValue = (s: string) => s.replace(/,/g, ",,");

/** QEMU arguments and kernel command-line words that attach the mounts. */
export function mountArgs(mounts: ResolvedMount[]): { qemu: string[]; kernel: string[] } {
  const qemu: string[] = [];
  const kernel: string[] = [];
  for (const m of mounts) {
    const id = `fs${m.tag}`;
    qemu.push(
      "-fsdev", `local,id=${id},path=${qemuOptValue(m.host)},security_model=none${m.readonly ? ",readonly=on" : ""}`,
      "-device", `virtio-9p-device,fsdev=${id},mount_tag=${m.tag}`,
    );
    kernel.push(`voidbox.mount=${m.tag}:${m.readonly ? "ro" : "rw"}:${m.guest}`);
  }
  return { qemu, kernel };
}
