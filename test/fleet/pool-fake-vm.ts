// A fake micro-VM sandbox for the warm-pool tests (not a test file): every open() is a
// "VM" with its own pid that records what was done in it, so a test can prove a VM
// served one stage attempt only, was stopped, and that pool boots ran one at a time.
// `sleep` runs until aborted (cancel, timeout); any other program echoes its argv.
import type { VmProvider } from "../../src/sandbox/types.js";
import type { ExecResult, Sandbox, StageVm, StageVmOptions, VmExit } from "../../src/sandbox/types.js";

export interface FakeVm {
  pid: number;
  opts: StageVmOptions;
  /** Commands run in it, but for the pool's priming command. */
  execs: number;
  primed: boolean;
  stopped: boolean;
  /** Ends the "process" as if QEMU died. */
  die(): void;
}

export class PoolFakeVms implements Sandbox {
  readonly kind = "qemu" as const;
  readonly vms: FakeVm[] = [];
  booting = 0;
  maxBooting = 0;
  /** Pool (background) boots that may still go ahead; the others wait for releasePoolBoots(). */
  poolBootsAllowed = Infinity;
  private held: Array<() => void> = [];
  /** The pool's priming command fails (a guest that boots but cannot run a command). */
  primeFails = false;
  private nextPid = 5000;

  provider(): VmProvider {
    return { sandbox: this, unavailableReason: "" };
  }

  /** VMs not stopped and not dead. */
  alive(): FakeVm[] {
    return this.vms.filter((v) => !v.stopped);
  }

  releasePoolBoots(): void {
    this.poolBootsAllowed = Infinity;
    for (const w of this.held.splice(0)) w();
  }

  async open(opts: StageVmOptions): Promise<StageVm> {
    this.booting++;
    this.maxBooting = Math.max(this.maxBooting, this.booting);
    try {
      if (opts.background && this.poolBootsAllowed <= 0) {
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(new Error("boot aborted"));
          opts.signal.addEventListener("abort", onAbort, { once: true });
          this.held.push(() => {
            opts.signal.removeEventListener("abort", onAbort);
            resolve();
          });
        });
      } else if (opts.background) this.poolBootsAllowed--;
      await new Promise((r) => setImmediate(r));
      if (opts.signal.aborted) throw new Error("boot aborted");
    } finally {
      this.booting--;
    }
    let markClosed!: () => void;
    const closed = new Promise<void>((r) => (markClosed = r));
    const vm: FakeVm = {
      pid: this.nextPid++,
      opts,
      execs: 0,
      primed: false,
      stopped: false,
      die: () => {
        vm.stopped = true;
        markClosed();
      },
    };
    this.vms.push(vm);
    const exit: VmExit = { exitCode: 0, signal: null, killed: false };
    return {
      vm: { accelerator: "tcg", pid: vm.pid, bootMs: 7 },
      closed,
      exec: async (cmd): Promise<ExecResult> => {
        if (vm.stopped) throw new Error(`fake VM ${vm.pid} is stopped`);
        if (opts.background && !vm.primed && vm.execs === 0) { // the pool's priming command
          vm.primed = true;
          return { exitCode: this.primeFails ? 127 : 0, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
        }
        vm.execs++;
        if (cmd.program === "sleep") {
          await new Promise<void>((r) => (cmd.signal.aborted ? r() : cmd.signal.addEventListener("abort", () => r(), { once: true })));
          return { exitCode: 143, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
        }
        return { exitCode: 0, stdout: Buffer.from(`${[cmd.program, ...cmd.args].join(" ")}\n${cmd.stdin.toString()}`), stderr: Buffer.alloc(0) };
      },
      // A single-step workflow must publish a result.json: one with a status.
      readFile: async (rel) => {
        if (vm.stopped) throw new Error(`fake VM ${vm.pid} is stopped`);
        return rel === "result.json" ? Buffer.from('{"status":"ok"}') : null;
      },
      stop: async () => {
        vm.die();
        return exit;
      },
    };
  }
}
