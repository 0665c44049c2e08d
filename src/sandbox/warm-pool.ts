/**
 * The warm pool: pre-booted, never-used micro-VMs of one shape, each handed to exactly
 * one stage attempt (which stops it as it would a cold VM), so isolation is unchanged.
 *
 * Shape = what makes guests differ: kernel, initramfs, memory, vCPUs, network. The pool
 * warms one shape at a time: the default (256 MiB, 1 vCPU, no network, the daemon's
 * guest image) until two stage attempts in a row ask for another shape, which then
 * becomes the warmed one (idle VMs of the old shape are stopped). A stage whose shape
 * has no ready VM boots cold, and so does a stage with a root image or mounts (they are
 * attached when QEMU starts).
 *
 * Refill is gentle: one boot at a time, niced, and only with a node slot that is free
 * while no stage waits for one (NodeSlots.tryAcquire). Idle and booting pool VMs hold
 * node slots (they use memory), but a stage never waits for them: NodeSlots evicts them
 * first. A pool VM that dies while idle is dropped and replaced; a failed boot backs
 * off (1 s doubling to 60 s) so a broken host does not spin.
 */
import type { components } from "../../generated/api.js";
import type { NodeSlots } from "../engine/node-slots.js";
import type { Logger, Sandbox, StageVm, StageVmOptions } from "./types.js";

export interface PoolShape {
  memoryMb: number;
  vcpus: number;
  network: boolean;
  /** Spec overrides of the guest image; absent: the daemon's image. */
  kernel?: string;
  initramfs?: string;
}

const DEFAULT_POOL_SHAPE: PoolShape = { memoryMb: 256, vcpus: 1, network: false };

function shapeKey(s: PoolShape): string {
  return JSON.stringify([s.kernel ?? null, s.initramfs ?? null, s.memoryMb, s.vcpus, s.network]);
}

/** The pool part of `/v1/health` (capacity.warm_pool). */
export type WarmPoolStats = components["schemas"]["WarmPool"];

interface Idle {
  vm: StageVm;
  key: string;
  release: () => void;
  bootMs: number;
}

/** A claimed warm VM: its node slot comes with it (the stage's stop gives it back). */
export interface Claimed {
  vm: StageVm;
  release: () => void;
  bootMs: number;
}

/**
 * Runs a small shell pipeline in a fresh pool VM before it is offered: proves the guest
 * runs commands (a VM that cannot is never handed out), and under TCG a guest's first
 * commands pay for translating the code they run — all of it after a snapshot restore,
 * whose VM starts with no translations: measured ~130 ms for a stage's first `sh -c`
 * with a command substitution, ~40 ms once the same paths (fork, exec, pipes, the shell,
 * a few applets) were primed. Better paid here, in the background, than by the stage.
 * It leaves nothing behind (/tmp only, removed).
 */
const PRIME_SCRIPT = 'v=$(uname -r); echo "$v" | tr a-z A-Z | head -c 64 > /tmp/.prime && cat /tmp/.prime > /dev/null; rm -f /tmp/.prime';

async function prime(vm: StageVm, signal: AbortSignal): Promise<void> {
  const r = await vm.exec({ program: "sh", args: ["-c", PRIME_SCRIPT], env: {}, stdin: Buffer.alloc(0), signal, maxOutputBytes: 1024 });
  if (signal.aborted) throw new Error("boot aborted");
  if (r.exitCode !== 0) throw new Error(`a first command in the pool VM exited ${r.exitCode}`);
}

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** Bound on one background boot (the sandbox has its own, larger one). */
const POOL_BOOT_TIMEOUT_MS = 120_000;

export class WarmPool {
  private readonly idle: Idle[] = [];
  private booting: { key: string; abort: AbortController; release: () => void } | null = null;
  private shape: PoolShape = DEFAULT_POOL_SHAPE;
  private target = shapeKey(DEFAULT_POOL_SHAPE);
  private lastAsked: string | null = null;
  private inUse = 0;
  private hits = 0;
  private misses = 0;
  private stopped = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private scheduled = false;

  constructor(
    private readonly o: {
      inner: Sandbox;
      slots: NodeSlots;
      size: number;
      log?: Logger;
      /** Told about hits and misses (metrics). */
      onRequest?: (result: "hit" | "miss") => void;
    },
  ) {
    o.slots.evictIdle = () => this.evictOne();
    o.slots.onRelease = () => this.refillSoon();
    this.refillSoon();
  }

  stats(): WarmPoolStats {
    return {
      size: this.o.size,
      ready: this.idle.length,
      booting: this.booting ? 1 : 0,
      in_use: this.inUse,
      hits: this.hits,
      misses: this.misses,
      shape: { memory_mb: this.shape.memoryMb, vcpus: this.shape.vcpus, network: this.shape.network },
    };
  }

  /**
   * A ready VM of this attempt's shape, removed from the pool for good (with its node
   * slot), or null: the caller boots cold. Counts a hit or a miss.
   */
  claim(o: StageVmOptions): Claimed | null {
    // A root image, mounts or an egress network are attached when QEMU starts: no pre-booted VM has them.
    // Such a stage boots cold and does not steer what the pool warms.
    if (o.storage || o.egress) {
      this.misses++;
      this.o.onRequest?.("miss");
      return null;
    }
    const shape: PoolShape = { memoryMb: o.memoryMb, vcpus: o.vcpus, network: o.network, kernel: o.kernel, initramfs: o.initramfs };
    const key = shapeKey(shape);
    this.follow(key, shape);
    const i = this.idle.findIndex((x) => x.key === key);
    if (i < 0 || this.stopped) {
      this.misses++;
      this.o.onRequest?.("miss");
      return null;
    }
    const [got] = this.idle.splice(i, 1);
    this.hits++;
    this.o.onRequest?.("hit");
    this.inUse++;
    let given = false;
    this.refillSoon();
    return {
      vm: got.vm,
      bootMs: got.bootMs,
      release: () => {
        if (given) return;
        given = true;
        this.inUse--;
        got.release();
      },
    };
  }

  /** Stops refilling and stops every idle VM and the boot in progress (daemon shutdown). */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    // Its slot is free at once, as for an eviction; the aborted boot kills its QEMU.
    const b = this.booting;
    this.booting = null;
    b?.abort.abort();
    b?.release();
    const idle = this.idle.splice(0);
    for (const x of idle) x.release();
    await Promise.all(idle.map((x) => x.vm.stop(graceMs).catch(() => undefined)));
  }

  /** Two attempts in a row of a shape other than the warmed one: warm that one instead. */
  private follow(key: string, shape: PoolShape): void {
    const asked = this.lastAsked;
    this.lastAsked = key;
    if (key === this.target || asked !== key) return;
    this.o.log?.info({ shape }, "warm pool now warms the shape recent stages asked for");
    this.shape = shape;
    this.target = key;
    this.failures = 0;
    for (const x of this.idle.filter((v) => v.key !== key)) this.drop(x, "shape no longer warmed");
    if (this.booting && this.booting.key !== key) this.booting.abort.abort();
  }

  /** NodeSlots' evictor: frees the slot of an idle pool VM, else of the one booting. */
  private evictOne(): boolean {
    const x = this.idle[0];
    if (x) {
      this.drop(x, "a stage needs its node slot");
      return true;
    }
    if (this.booting) {
      const b = this.booting;
      this.booting = null;
      b.abort.abort();
      b.release();
      return true;
    }
    return false;
  }

  /** Out of the pool at once (slot given back now), stopped in the background. */
  private drop(x: Idle, why: string): void {
    const i = this.idle.indexOf(x);
    if (i >= 0) this.idle.splice(i, 1);
    x.release();
    this.o.log?.info({ pid: x.vm.vm?.pid, why }, "warm pool VM stopped");
    void x.vm.stop(0).catch(() => undefined);
  }

  /** After the current call stack: a release that triggers this must not lose its slot to a refill. */
  private refillSoon(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.refill();
    });
  }

  private refill(): void {
    if (this.stopped || this.booting || this.retryTimer) return;
    if (this.idle.length >= this.o.size) return;
    const shape = this.shape;
    const key = this.target;
    const release = this.o.slots.tryAcquire({ memoryMib: shape.memoryMb, vcpus: shape.vcpus });
    if (!release) return; // the node is busy: a later release calls refillSoon again
    const abort = new AbortController();
    const booting = { key, abort, release };
    this.booting = booting;
    const timer = setTimeout(() => abort.abort(), POOL_BOOT_TIMEOUT_MS);
    const t0 = Date.now();
    this.o.inner
      .open({ runId: "warm-pool", stage: "pool", attempt: 0, ...shape, signal: abort.signal, background: true })
      .then(async (vm) => {
        // Evicted or stopped while priming: the VM goes at once, not after the command.
        const kill = () => void vm.stop(0).catch(() => undefined);
        abort.signal.addEventListener("abort", kill, { once: true });
        try {
          await prime(vm, abort.signal);
          return vm;
        } catch (e) {
          await vm.stop(0).catch(() => undefined);
          throw e;
        } finally {
          abort.signal.removeEventListener("abort", kill);
        }
      })
      .then(
        (vm) => {
          const mine = this.booting === booting;
          if (mine) this.booting = null;
          // Evicted, shape changed or stopping meanwhile: nobody gets this VM.
          if (!mine || abort.signal.aborted || this.stopped || key !== this.target) {
            if (mine) release();
            void vm.stop(0).catch(() => undefined);
            return;
          }
          this.failures = 0;
          const x: Idle = { vm, key, release, bootMs: vm.vm?.bootMs ?? Date.now() - t0 };
          this.idle.push(x);
          void vm.closed?.then(() => {
            if (this.idle.includes(x)) {
              this.o.log?.warn({ pid: vm.vm?.pid }, "idle warm pool VM died; replacing it");
              this.drop(x, "died while idle");
            }
          });
        },
        (e: unknown) => {
          const mine = this.booting === booting;
          if (mine) {
            this.booting = null;
            release();
          }
          if (abort.signal.aborted || this.stopped) return;
          this.failures++;
          const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.failures - 1));
          this.o.log?.warn({ err: (e as Error).message, retryMs: wait }, "warm pool boot failed");
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.refill();
          }, wait);
          this.retryTimer.unref();
        },
      )
      .finally(() => {
        clearTimeout(timer);
        this.refillSoon();
      });
  }
}
