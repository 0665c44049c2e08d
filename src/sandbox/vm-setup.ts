import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import type { components } from "../../generated/api.js";
import type { Limits } from "../limits.js";
import { probeGuest, type BootFailure } from "./guest-probe.js";
import { probeIdentity, probeKey, qemuVersion, readProbeCache, writeProbeCache } from "./probe-cache.js";
import type { AccelMode, Accelerator, Sandbox, VmProvider } from "./types.js";
import { checkDieWithParent, findGuestImage, killLeftoverVms, QemuSandbox, stopAllVms, VmSnapshots, type GuestImage } from "./qemu/index.js";

type Health = components["schemas"]["Health"];

export interface VmSetupOptions {
  /** `auto` (default) picks KVM when a guest boots under it, else TCG; `kvm`/`tcg` force it. Either way a guest boot is proven. */
  accel?: AccelMode;
  /** Guest image overrides (default: the image `make guest` built under build/guest). */
  kernel?: string;
  initramfs?: string;
  /** QEMU binary (default `qemu-system-x86_64` on the PATH). */
  qemuBinary?: string;
}

/** The micro-VM part of `/v1/health`. */
export type GuestHealth = Pick<Health, "accelerator" | "guest_kernel" | "guest_boot" | "guest_boot_error" | "guest_probe" | "recent_boot_failures">;

export interface VmSetup {
  /** Its `sandbox`/`unavailableReason` are filled in when the probe settles; `ready()` waits for that. */
  provider: VmProvider;
  health(): GuestHealth;
  /** Resolves when the probe has settled (never rejects). */
  settled: Promise<void>;
  /** Stops the probe and every VM (daemon shutdown). */
  stopAll(graceMs: number): Promise<void>;
}

/** Beyond the probe's own bounds (QEMU --version, a KVM try, the TCG boot, VM stops): a watchdog that should never fire. */
const PROBE_SLACK_MS = 30_000;

/**
 * Starts the micro-VM setup in the background and returns at once: kill micro-VMs a
 * dead daemon left behind (pid files under the state dir), find QEMU and the guest
 * image, and settle which accelerator boots a guest — from the probe cache in the
 * state dir when this host, QEMU and guest image were probed before, else by booting
 * a probe VM. Runs that need a micro-VM wait for it (`provider.ready`).
 */
export function startVmSetup(
  o: VmSetupOptions & {
    stateDir: string;
    projectRoot: string;
    log: Logger;
    limits: Pick<Limits, "guestProbeTimeoutMs" | "bootFailuresKept" | "vmSnapshots">;
    now?: () => number;
    /** Wraps the sandbox once the probe settles (the daemon's node-wide VM slots). */
    gate?: (sandbox: Sandbox) => Sandbox;
  },
): VmSetup {
  const now = o.now ?? Date.now;
  const t0 = now();
  const pidDir = path.join(o.stateDir, "vms");
  const accel = o.accel ?? "auto";
  const qemuBinary = o.qemuBinary ?? "qemu-system-x86_64";
  const abort = new AbortController();

  let state: { boot: "probing" } | { boot: "ok"; accelerator: Accelerator; cached: boolean; at: number } | { boot: "failed"; reason: string; at: number } = { boot: "probing" };
  // A few stat calls: health names the guest kernel from the first reply on.
  const found = findGuestImage(o.projectRoot);
  let image: GuestImage | null = o.kernel && o.initramfs ? { kernel: o.kernel, initramfs: o.initramfs, kernelVersion: kernelVersionBeside(o.kernel) } : found;
  const failures: BootFailure[] = [];
  const remember = (f: BootFailure[]) => {
    failures.unshift(...f);
    failures.splice(o.limits.bootFailuresKept);
  };

  let settle!: () => void;
  const settled = new Promise<void>((r) => (settle = r));
  const provider: VmProvider = {
    sandbox: null,
    unavailableReason: "the guest-boot probe has not finished",
    ready: (signal) => waitSettled(settled, signal),
  };

  const succeed = (accelerator: Accelerator, cached: boolean, bootedKernel?: string) => {
    // What the guest itself reported beats the kernel-version file next to the image.
    if (bootedKernel) image = { ...image!, kernelVersion: bootedKernel };
    const img = image!;
    state = { boot: "ok", accelerator, cached, at: now() };
    const gate = o.gate ?? ((x: Sandbox) => x);
    provider.sandbox = gate(new QemuSandbox({
      kernel: img.kernel,
      initramfs: img.initramfs,
      accelerator,
      pidDir,
      log: o.log,
      qemuBinary: o.qemuBinary,
      snapshots: o.limits.vmSnapshots > 0 ? new VmSnapshots(path.join(o.stateDir, "vm-snapshots"), o.limits.vmSnapshots, o.log) : undefined,
      onBootFailure: (f) =>
        remember([{ at: new Date(now()).toISOString(), source: "stage", accelerator, run_id: f.runId, stage: f.stage, reason: f.reason }]),
    }));
    provider.unavailableReason = "";
    o.log.info({ accelerator, cached, ms: now() - t0, kernel: img.kernel, guest_kernel: img.kernelVersion }, "micro-VMs available");
  };
  const fail = (reason: string) => {
    state = { boot: "failed", reason, at: now() };
    provider.sandbox = null;
    provider.unavailableReason = `no micro-VM can boot on this host: ${reason}`;
    o.log.warn({ reason, ms: now() - t0 }, "micro-VMs unavailable; sandbox mode local fails and auto falls back to mock");
  };

  const run = async () => {
    const killed = await killLeftoverVms(pidDir, o.log);
    if (killed) o.log.warn({ killed }, "killed micro-VMs left over by a previous daemon");
    if (!(await checkDieWithParent()))
      o.log.warn({}, "setpriv (util-linux) with --pdeathsig is not available: micro-VMs will outlive a daemon killed by SIGKILL until the next start cleans them up");
    const version = await qemuVersion(qemuBinary);
    if (!version.ok) return fail(version.reason);
    if (!image) return fail("no guest image (run: make guest)");
    const identity = probeIdentity({ qemuBinary, qemuVersion: version.version, kernel: image.kernel, initramfs: image.initramfs, accel });
    const key = probeKey(identity);
    const cached = readProbeCache(o.stateDir, key);
    if (cached) return succeed(cached.accelerator, true, cached.guest_kernel);
    const r = await probeGuest({
      kernel: image.kernel,
      initramfs: image.initramfs,
      accel,
      kvmUsable: identity.kvm_usable,
      deadlineMs: o.limits.guestProbeTimeoutMs,
      qemuBinary,
      pidDir,
      signal: abort.signal,
      now,
    });
    if (abort.signal.aborted) return; // shutting down: no verdict
    remember(r.failures);
    if (!r.ok) return fail(r.reason);
    writeProbeCache(o.stateDir, { key, identity, accelerator: r.accelerator, boot_ms: r.bootMs, guest_kernel: r.kernelVersion, probed_at: new Date(now()).toISOString() });
    succeed(r.accelerator, false, r.kernelVersion);
  };

  const watchdogMs = o.limits.guestProbeTimeoutMs + PROBE_SLACK_MS;
  const watchdog = setTimeout(() => {
    if (state.boot === "probing") fail(`the guest-boot probe did not finish within ${watchdogMs} ms`);
    settle();
  }, watchdogMs);
  watchdog.unref();
  run()
    .catch((e: unknown) => fail(`guest-boot probe error: ${(e as Error).message}`))
    .finally(() => {
      clearTimeout(watchdog);
      settle();
    });

  return {
    provider,
    settled,
    health(): GuestHealth {
      const probe = state.boot === "probing" ? null : { cached: state.boot === "ok" && state.cached, duration_ms: Math.max(0, state.at - t0), finished_at: new Date(state.at).toISOString() };
      return {
        accelerator: state.boot === "probing" ? "probing" : state.boot === "ok" ? state.accelerator : null,
        guest_kernel: image?.kernelVersion ?? null,
        guest_boot: state.boot,
        guest_boot_error: state.boot === "failed" ? state.reason : null,
        guest_probe: probe,
        recent_boot_failures: [...failures],
      };
    },
    async stopAll(graceMs) {
      abort.abort();
      await stopAllVms(graceMs);
      // The probe stops its own VM on abort; wait (bounded) so none outlives the daemon.
      await Promise.race([settled, new Promise((r) => setTimeout(r, graceMs + 5000).unref())]);
    },
  };
}

/** Resolves when `settled` does or `signal` aborts (the run was cancelled meanwhile). */
function waitSettled(settled: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    void settled.then(done);
  });
}

/** The `kernel-version` file guest/build.sh writes next to a kernel, else "unknown" until a boot tells. */
function kernelVersionBeside(kernel: string): string {
  try {
    return fs.readFileSync(path.join(path.dirname(kernel), "kernel-version"), "utf8").trim() || "unknown";
  } catch {
    return "unknown";
  }
}

/** Mock-only health (micro-VMs disabled or injected by a test). */
export function noVmHealth(): GuestHealth {
  return { accelerator: null, guest_kernel: null, guest_boot: null, guest_boot_error: null, guest_probe: null, recent_boot_failures: [] };
}
