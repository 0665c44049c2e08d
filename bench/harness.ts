/** Shared by the benches: a free loopback port, and running a bench that boots micro-VMs. */
import { once } from "node:events";
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
