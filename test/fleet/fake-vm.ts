// A fake micro-VM sandbox for the fleet tests (not a test file): it reports itself as
// QEMU, so the daemon gates it behind its node VM slots, and each stage's command runs
// until the test lets it finish. Nothing is spawned.
import type { VmProvider } from "../../src/sandbox/types.js";
import type { ExecResult, Sandbox, StageVm, StageVmOptions } from "../../src/sandbox/types.js";

export class FakeVms implements Sandbox {
  readonly kind = "qemu" as const;
  /** Stage VMs that were opened and not stopped yet, by `runId/stage`. */
  readonly live = new Map<string, { opts: StageVmOptions; finish: (code: number) => void }>();
  opened = 0;
  private nextPid = 1000;

  provider(): VmProvider {
    return { sandbox: this, unavailableReason: "" };
  }

  /** Lets the running command of `runId`'s stage exit with `code`. */
  finish(runId: string, code = 0): void {
    const hit = [...this.live.entries()].find(([k]) => k.startsWith(`${runId}/`));
    if (!hit) throw new Error(`no live fake VM for run ${runId} (live: ${[...this.live.keys()].join(", ") || "none"})`);
    hit[1].finish(code);
  }

  async open(opts: StageVmOptions): Promise<StageVm> {
    this.opened++;
    const key = `${opts.runId}/${opts.stage}`;
    let finish!: (code: number) => void;
    const exited = new Promise<number>((r) => (finish = r));
    this.live.set(key, { opts, finish });
    return {
      vm: { accelerator: "tcg", pid: this.nextPid++, bootMs: 42 },
      exec: async (cmd): Promise<ExecResult> => {
        const onAbort = () => finish(143);
        cmd.signal.addEventListener("abort", onAbort, { once: true });
        const exitCode = await exited;
        cmd.signal.removeEventListener("abort", onAbort);
        return { exitCode, stdout: Buffer.from("fake\n"), stderr: Buffer.alloc(0) };
      },
      // A single-step workflow must publish a result.json: one with a status.
      readFile: async (rel) => (rel === "result.json" ? Buffer.from('{"status":"ok"}') : null),
      stop: async () => {
        finish(143);
        this.live.delete(key);
        return { exitCode: 0, signal: null, killed: false };
      },
    };
  }
}
