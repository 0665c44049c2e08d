/** Shared by the benches: a free loopback port, a process's CPU time, and running a bench that boots micro-VMs. */
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import { stopAllVms } from "../src/sandbox/qemu/index.js";

export async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  return port;
}

/** Runs `main` (its result is the exit code); every micro-VM is stopped however it ends, Ctrl-C included. */
export function runVmBench(main: () => Promise<number>): void {
  const onSignal = () => void stopAllVms(0).finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  main()
    .then(async (code) => {
      await stopAllVms(0);
      process.exitCode = code;
    })
    .catch(async (e) => {
      console.error(e);
      await stopAllVms(0);
      process.exitCode = 1;
    });
}

/**
 * CPU ms (user + system) process `pid` (or only its main thread) has used so far, from
 * /proc: load-independent, unlike wall time. 10 ms resolution; NaN when unreadable.
 */
export function cpuMs(pid: number, mainThreadOnly = false): number {
  try {
    const stat = fs.readFileSync(mainThreadOnly ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, "latin1");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return NaN;
  }
}
