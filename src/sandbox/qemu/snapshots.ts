/**
 * RAM snapshots of booted, idle guests: a fresh micro-VM restored from one skips the
 * kernel's boot. Measured under TCG on 2 cores: about half the QEMU CPU-seconds of a
 * cold boot, and half its wall time to the first command (bench/snapshot.ts).
 *
 * One snapshot per guest shape (QEMU binary, kernel, initramfs, kernel command line,
 * machine options, memory, vCPUs, accelerator — each file by its size, mtime and inode,
 * so a rebuilt image is a new shape). Only shapes without a network or disks are
 * snapshotted: those devices carry host state a restore cannot reproduce.
 *
 * The first cold boot of a shape takes its snapshot (its state written with QMP
 * `migrate` to `exec:cat > FILE`, after which it is resumed), so it costs that one
 * boot a few hundred ms once; the files live under `<state dir>/vm-snapshots`, the most
 * recently used `keep` of them. A restored guest starts with the snapshot's random
 * pool and clock, shared with every other restore: the sandbox reseeds it from the
 * host (the SEED frame, src/sandbox/qemu/protocol.ts) before it is used. A snapshot
 * whose restore fails is deleted and that shape boots cold for the daemon's lifetime.
 */
import { createHash } from "node:crypto";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from "node:fs";
import { fileIdentity, fileIdentityOnPath } from "../file-identity.js";
import path from "node:path";
import { shQuote } from "./protocol.js";
import { Qmp } from "./qmp.js";
import type { Accelerator, Logger } from "../types.js";

export interface SnapshotShape {
  qemuBinary: string;
  kernel: string;
  initramfs: string;
  kernelArgs: string[];
  machineOptions: string;
  memoryMb: number;
  vcpus: number;
  accelerator: Accelerator;
}

/** Bound on taking one snapshot (pausing, writing ~25 MiB of an idle 256 MiB guest, resuming). */
const TAKE_TIMEOUT_MS = 30_000;
const QMP_TIMEOUT_MS = 5_000;
const SUFFIX = ".vmstate";

export class VmSnapshots {
  /** Shapes not to snapshot again in this process: taking or restoring failed. */
  private readonly refused = new Set<string>();
  private readonly taking = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly keep: number,
    private readonly log?: Logger,
  ) {}

  key(shape: SnapshotShape): string {
    const id = {
      ...shape,
      qemuBinary: fileIdentityOnPath(shape.qemuBinary),
      kernel: fileIdentity(shape.kernel),
      initramfs: fileIdentity(shape.initramfs),
    };
    return createHash("sha256").update(JSON.stringify(id)).digest("hex").slice(0, 32);
  }

  private file(key: string): string {
    return path.join(this.dir, key + SUFFIX);
  }

  /** The snapshot to restore for this shape, or null (none yet, or refused). Marks it used. */
  find(key: string): string | null {
    if (this.keep <= 0 || this.refused.has(key)) return null;
    const f = this.file(key);
    try {
      const now = new Date();
      utimesSync(f, now, now); // most recently used: kept longest
      return f;
    } catch {
      return null;
    }
  }

  /** Whether a boot of this shape should take its snapshot (none yet, none being taken). */
  wanted(key: string): boolean {
    return this.keep > 0 && !this.refused.has(key) && !this.taking.has(key) && !existsSync(this.file(key));
  }

  /** A restore from it failed: delete it, and boot this shape cold from now on. */
  refuse(key: string, reason: string): void {
    this.refused.add(key);
    rmSync(this.file(key), { force: true });
    this.log?.warn({ snapshot: key, reason }, "micro-VM snapshot refused; this shape boots cold");
  }

  /**
   * Snapshots a booted, idle guest through its QMP socket: migrate it to a temporary
   * file, resume it, then publish the file by rename. The VM runs on whatever
   * happens; a failure is logged and the shape is not tried again.
   */
  async take(key: string, qmpPath: string): Promise<void> {
    if (!this.wanted(key)) return;
    this.taking.add(key);
    const tmp = path.join(this.dir, `${key}.${process.pid}.tmp`);
    const t0 = Date.now();
    let qmp: Qmp | null = null;
    try {
      mkdirSync(this.dir, { recursive: true });
      qmp = await Qmp.connect(qmpPath, QMP_TIMEOUT_MS);
      // QEMU's default cap (128 MiB/s) would only slow a local file down.
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": 8 * 1024 ** 3 }, QMP_TIMEOUT_MS);
      await qmp.execute("migrate", { uri: `exec:cat > ${shQuote(tmp)}` }, QMP_TIMEOUT_MS);
      const deadline = Date.now() + TAKE_TIMEOUT_MS;
      for (;;) {
        const r = (await qmp.execute("query-migrate", undefined, QMP_TIMEOUT_MS)) as { status?: string; "error-desc"?: string };
        if (r.status === "completed") break;
        if (r.status === "failed" || r.status === "cancelled") throw new Error(`migration ${r.status}: ${r["error-desc"] ?? ""}`);
        if (Date.now() > deadline) throw new Error(`not written within ${TAKE_TIMEOUT_MS} ms`);
        await new Promise((res) => setTimeout(res, 10));
      }
      const fd = openSync(tmp, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.file(key));
      this.prune();
      this.log?.info({ snapshot: key, ms: Date.now() - t0, bytes: statSync(this.file(key)).size }, "micro-VM snapshot taken");
    } catch (e) {
      this.refused.add(key);
      rmSync(tmp, { force: true });
      this.log?.warn({ snapshot: key, err: (e as Error).message }, "cannot snapshot a micro-VM; this shape boots cold");
    } finally {
      // A migration leaves the VM paused (completed or not): resume it whatever happened.
      // (Paused before the migration, its restores would stay paused too: QEMU carries the run state over.)
      await qmp?.execute("cont", undefined, QMP_TIMEOUT_MS).catch(() => undefined);
      qmp?.close();
      this.taking.delete(key);
    }
  }

  /** Keeps the `keep` most recently used snapshots; also drops temporaries of dead processes. */
  private prune(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    const snaps = names
      .filter((n) => n.endsWith(SUFFIX))
      .map((n) => ({ f: path.join(this.dir, n), t: statSync(path.join(this.dir, n), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
      .sort((a, b) => b.t - a.t);
    for (const s of snaps.slice(this.keep)) rmSync(s.f, { force: true });
    for (const n of names.filter((x) => x.endsWith(".tmp") && !x.includes(`.${process.pid}.`))) rmSync(path.join(this.dir, n), { force: true });
  }
}
