// Real storage faults for the fault suite (root only): a small tmpfs that can be filled
// (ENOSPC), remounted read-only (EROFS) or made immutable (chattr +i → EPERM).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { tmpDir } from "../helpers/daemon.js";

const IS_ROOT = typeof process.getuid === "function" && process.getuid() === 0;

/** Why real storage faults cannot be injected here (null when they can): not root, or no permission to mount (a container without CAP_SYS_ADMIN). */
export function cannotMount(): string | null {
  if (!IS_ROOT) return "not root (tmpfs mounts, remount ro and chattr need root; CI runs as root)";
  const dir = tmpDir("vbx-mount-probe-");
  try {
    run("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]);
    run("umount", [dir]);
    return null;
  } catch (e) {
    return `cannot mount a tmpfs: ${(e as Error).message.split("\n")[0]}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"], timeout: 10_000 });
}

export interface SmallDisk {
  /** The mount point. */
  dir: string;
  /** Fills the filesystem to the last byte (a file `filler` in the mount root). */
  fill(): void;
  /** Frees `bytes` of the filler (all of it when omitted). */
  free(bytes?: number): void;
  readOnly(on: boolean): void;
  immutable(file: string, on: boolean): void;
  /** Unmounts (and removes the mount point); safe to call twice. */
  dispose(): void;
}

export function mountTmpfs(size = "2m"): SmallDisk {
  const dir = tmpDir("vbx-tmpfs-");
  run("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir]);
  const filler = path.join(dir, "filler");
  const immutables = new Set<string>();
  let mounted = true;
  return {
    dir,
    fill() {
      const fd = fs.openSync(filler, "a");
      try {
        for (const chunk of [1 << 16, 4096, 512, 1]) {
          const buf = Buffer.alloc(chunk, 0x2e);
          for (;;) {
            try {
              if (fs.writeSync(fd, buf) < chunk) break;
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code === "ENOSPC") break;
              throw e;
            }
          }
        }
      } finally {
        fs.closeSync(fd);
      }
    },
    free(bytes) {
      if (!fs.existsSync(filler)) return;
      if (bytes === undefined) return fs.rmSync(filler);
      fs.truncateSync(filler, Math.max(0, fs.statSync(filler).size - bytes));
    },
    readOnly(on) {
      run("mount", ["-o", `remount,${on ? "ro" : "rw"}`, dir]);
    },
    immutable(file, on) {
      run("chattr", [on ? "+i" : "-i", file]);
      if (on) immutables.add(file);
      else immutables.delete(file);
    },
    dispose() {
      if (!mounted) return;
      for (const f of immutables) {
        try {
          run("chattr", ["-i", f]);
        } catch {
          // unmounting drops it anyway
        }
      }
      run("umount", ["-l", dir]);
      mounted = false;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether chattr +i works on this kernel's tmpfs (Linux ≥ 6.0). */
export function chattrWorks(disk: SmallDisk): boolean {
  const probe = path.join(disk.dir, "chattr-probe");
  fs.writeFileSync(probe, "x");
  try {
    disk.immutable(probe, true);
    disk.immutable(probe, false);
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(probe, { force: true });
  }
}
