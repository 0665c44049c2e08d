/**
 * The guest kernel's command line: what this host, accelerator and kernel boot fastest
 * with, and the machine options a kernel needs (from the file next to it).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import type { Accelerator } from "../types.js";

/** Kernel arguments measured to shorten a TCG boot of the Debian cloud kernel. */
const TUNED_KERNEL_ARGS = [
  "console=ttyS0",
  "quiet",
  "loglevel=0",
  "nokaslr",
  "i8042.noaux",
  "i8042.nokbd",
  "8250.nr_uarts=1",
  // Initcalls that cost 10-100 ms each under TCG and do nothing for us (crypto
  // self-tests, kprobe tracing, the module-signing key: our modules then load
  // unverified, which the Debian kernel allows without MODULE_SIG_FORCE).
  "initcall_blacklist=cmos_init,i8042_init,crypto_kdf108_init,init_kprobe_trace,load_system_certificate_list,init_encrypted",
  "cryptomgr.notests",
  // Registering 256 legacy BSD pty pairs took ~125 ms of the minimal kernel's boot under
  // TCG; nothing in the guest uses them (the Debian kernel has none: ignored there).
  "pty.legacy_count=0",
  "mitigations=off",
  "rodata=off",
  "init_on_alloc=0",
  "audit=0",
  "apparmor=0",
  "security=none",
  "nowatchdog",
  "random.trust_cpu=on",
  // The IO-APIC timer check and the clocksource watchdog only cost time in a TCG guest.
  "no_timer_check",
  "tsc=reliable",
  "panic=-1",
];

let tscKhzCache: number | null | undefined;
/**
 * The host TSC frequency in kHz when the host TSC is constant, else null. Under TCG
 * the guest's rdtsc is the host's, and the guest's PIT-based TSC calibration fails
 * now and then ("tsc: Unable to calibrate against PIT"), after which the Debian
 * kernel hangs in boot; `tsc_early_khz=` skips that calibration.
 */
export function hostTscKhz(): number | null {
  if (tscKhzCache !== undefined) return tscKhzCache;
  tscKhzCache = null;
  try {
    const info = readFileSync("/proc/cpuinfo", "latin1");
    const flags = /^flags\s*:(.*)$/m.exec(info)?.[1] ?? "";
    const mhz = Number(/^cpu MHz\s*:\s*([0-9.]+)/m.exec(info)?.[1]);
    if (/\bconstant_tsc\b/.test(flags) && Number.isFinite(mhz) && mhz > 100) tscKhzCache = Math.round(mhz * 1000);
  } catch {
    // not Linux, or no /proc: the guest calibrates by itself
  }
  return tscKhzCache;
}

/**
 * Added for a single-vCPU TCG guest of the minimal kernel only. `noapictimer`: the
 * local APIC timer needs a ~100 ms calibration against the PIT at boot (TCG has no
 * TSC-deadline timer); the PIT serves as the clock event device instead. Measured:
 * ~250 ms less to the first command. Not with more vCPUs, nor under KVM (TSC-deadline
 * LAPIC timer: no calibration, cheaper than the PIT), and never for the Debian cloud
 * kernel: it boots, but its timers then never fire, so the first sleep in the guest
 * (the init's output poll) hangs and no command ever finishes.
 */
export const TCG_KERNEL_ARGS = ["noapictimer"];

/** The minimal kernel (guest/kernel.config) is the one built without ACPI. */
const isMinimalKernel = (kernel: string) => microvmOptionsFor(kernel).split(",").includes("acpi=off");

/**
 * The tuned command line for this host, accelerator, vCPU count and kernel: adds
 * TCG_KERNEL_ARGS for the minimal kernel on one vCPU under TCG, and tsc_early_khz when
 * the host TSC is known.
 */
export function tunedKernelArgs(accelerator: Accelerator, vcpus: number, kernel: string): string[] {
  const khz = hostTscKhz();
  return [
    ...TUNED_KERNEL_ARGS,
    ...(accelerator === "tcg" && vcpus === 1 && isMinimalKernel(kernel) ? TCG_KERNEL_ARGS : []),
    ...(khz ? [`tsc_early_khz=${khz}`] : []),
  ];
}

/**
 * Extra `-M microvm,...` options a kernel needs, from the `microvm-options` file next to
 * it (written by guest/build.sh): the custom kernel has no ACPI and runs with
 * `acpi=off`, so QEMU lists its virtio-mmio devices on the kernel command line. The
 * Debian cloud kernel needs ACPI for that (no file: QEMU's defaults).
 */
export function microvmOptionsFor(kernel: string): string {
  try {
    const v = readFileSync(path.join(path.dirname(kernel), "microvm-options"), "utf8").trim();
    return /^[a-z0-9-]+=[a-z0-9]+(,[a-z0-9-]+=[a-z0-9]+)*$/.test(v) ? v : "";
  } catch {
    return ""; // none (the cloud kernel), or unreadable
  }
}
