/**
 * The guest-boot probe's verdict, cached in `<stateDir>/guest-probe.json` so that a
 * restart on the same host does not boot a probe VM again. An entry is keyed by
 * everything that decides whether a guest boots: the host kernel (`uname -r`), the
 * QEMU binary and version, the guest kernel and initramfs files (path, size, mtime,
 * inode), the requested accelerator and whether /dev/kvm is usable. Only successful
 * probes are cached: a failure is probed again at the next start, so fixing the host
 * (installing a QEMU module, adding /dev/kvm) needs no manual cache flush.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { writeFileAtomic } from "../store/fsutil.js";
import type { AccelMode, Accelerator } from "./types.js";
import { fileIdentity, fileIdentityOnPath } from "./file-identity.js";


export interface ProbeIdentity {
  host_kernel: string;
  qemu: string;
  guest_kernel: string;
  initramfs: string;
  accel: AccelMode;
  kvm_usable: boolean;
}

export interface CachedProbe {
  key: string;
  identity: ProbeIdentity;
  accelerator: Accelerator;
  boot_ms: number;
  /** `uname -r` the probe guest reported. */
  guest_kernel?: string;
  probed_at: string;
}

interface CacheFile {
  version: 1;
  entries: CachedProbe[];
}

export const PROBE_CACHE_FILE = "guest-probe.json";
/** A state dir moved between a few hosts or images keeps each one's verdict. */
const MAX_ENTRIES = 8;

/** Whether this process may open /dev/kvm (not whether a guest boots under it: that is the probe's). */
export function kvmUsable(): boolean {
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export type QemuVersion = { ok: true; version: string } | { ok: false; reason: string };

/** The first line of `qemu --version` (bounded), or why QEMU cannot run at all. */
export function qemuVersion(binary: string, timeoutMs = 10_000): Promise<QemuVersion> {
  return new Promise((resolve) => {
    execFile(binary, ["--version"], { timeout: timeoutMs, maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const why =
          code === "ENOENT"
            ? `${binary} is not installed (apt-get install qemu-system-x86)`
            : `${binary} --version failed: ${(String(stderr).trim() || err.message).slice(0, 300)}`;
        resolve({ ok: false, reason: why });
        return;
      }
      resolve({ ok: true, version: String(stdout).split("\n")[0].trim() });
    });
  });
}

export function probeIdentity(o: {
  qemuBinary: string;
  qemuVersion: string;
  kernel: string;
  initramfs: string;
  accel: ProbeIdentity["accel"];
}): ProbeIdentity {
  return {
    host_kernel: os.release(),
    qemu: `${o.qemuVersion} (${fileIdentityOnPath(o.qemuBinary)})`,
    guest_kernel: fileIdentity(o.kernel),
    initramfs: fileIdentity(o.initramfs),
    accel: o.accel,
    kvm_usable: kvmUsable(),
  };
}

export function probeKey(id: ProbeIdentity): string {
  const canonical = JSON.stringify(Object.keys(id).sort().map((k) => [k, id[k as keyof ProbeIdentity]]));
  return createHash("sha256").update(canonical).digest("hex");
}

function readCacheFile(stateDir: string): CacheFile {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(stateDir, PROBE_CACHE_FILE), "utf8")) as Partial<CacheFile>;
    if (v && v.version === 1 && Array.isArray(v.entries)) return { version: 1, entries: v.entries.filter(isEntry) };
  } catch {
    // absent or corrupt: treated as empty (it is only a cache)
  }
  return { version: 1, entries: [] };
}

function isEntry(e: unknown): e is CachedProbe {
  const c = e as CachedProbe;
  return (
    !!c &&
    typeof c.key === "string" &&
    (c.accelerator === "kvm" || c.accelerator === "tcg") &&
    typeof c.boot_ms === "number" &&
    typeof c.probed_at === "string"
  );
}

export function readProbeCache(stateDir: string, key: string): CachedProbe | null {
  return readCacheFile(stateDir).entries.find((e) => e.key === key) ?? null;
}

/** Records a successful probe (newest first, bounded). Never throws: a cache that cannot be written is only slower. */
export function writeProbeCache(stateDir: string, entry: CachedProbe): boolean {
  try {
    const file = readCacheFile(stateDir);
    const entries = [entry, ...file.entries.filter((e) => e.key !== entry.key)].slice(0, MAX_ENTRIES);
    writeFileAtomic(path.join(stateDir, PROBE_CACHE_FILE), JSON.stringify({ version: 1, entries } satisfies CacheFile, null, 2) + "\n");
    return true;
  } catch {
    return false;
  }
}
