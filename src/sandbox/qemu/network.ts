/**
 * The guest's network. Three shapes:
 *   - none (the default): no network device at all;
 *   - `sandbox.network: true`: QEMU user networking (NAT to wherever the host reaches);
 *   - an egress (agent boxes with a provider): user networking with `restrict=on`, which
 *     drops every packet the guest sends except to a `guestfwd`, and one guestfwd from
 *     guestIp:guestPort to the provider's address. No DNS, no host ports, no internet.
 *
 * A guestfwd whose target is a `tcp:` chardev connects once when QEMU starts and serves a
 * single guest connection; the `cmd:` form starts its command for every connection the
 * guest opens, with the connection as the command's stdin/stdout. The command here is a
 * small Node relay (this daemon's own node binary) to the one address the daemon resolved
 * before the boot. libslirp splits the command line at spaces (no quoting), so the relay
 * lives in a file whose path has none.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Egress } from "../types.js";

/**
 * Copies bytes both ways between the guest's connection (fd 0) and host:port, and exits
 * when either side closes or fails, or after a connect timeout / lifetime cap: a relay
 * never outlives its connection or, since QEMU's end then closes, its VM.
 */
const RELAY_SOURCE = `"use strict";
const net = require("net");
const [host, port] = process.argv.slice(2);
const guest = new net.Socket({ fd: 0, readable: true, writable: true });
const remote = net.connect({ host, port: Number(port) });
const quit = () => { guest.destroy(); remote.destroy(); process.exit(0); };
const connectTimer = setTimeout(quit, 15000);
remote.once("connect", () => clearTimeout(connectTimer));
setTimeout(quit, 6 * 3600 * 1000).unref();
guest.pipe(remote);
remote.pipe(guest);
for (const s of [guest, remote]) { s.on("error", quit); s.on("close", quit); }
`;

let relayFile: string | undefined;

/**
 * The relay script's path: in a directory of this process's own (mkdtemp: 0700, a fresh
 * name, so nobody else can have planted a script there), removed when the process exits.
 */
function relayScript(): string {
  if (relayFile && fs.existsSync(relayFile)) return relayFile;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "voidbox-relay-"));
  const file = path.join(dir, "egress-relay.cjs");
  fs.writeFileSync(file, RELAY_SOURCE, { mode: 0o600 });
  if (!relayFile) process.on("exit", () => fs.rmSync(path.dirname(relayFile ?? file), { recursive: true, force: true }));
  relayFile = file;
  return file;
}

const SAFE_WORD = /^[A-Za-z0-9_./:+-]+$/;

/**
 * QEMU arguments and kernel command-line words for an egress network (the plain
 * `sandbox.network` user networking is built with the rest of the VM's arguments).
 */
export function egressArgs(e: Egress, nodeBinary = process.execPath): { qemu: string[]; kernel: string[] } {
  const relay = relayScript();
  for (const w of [nodeBinary, relay, e.host, String(e.port), e.guestIp, String(e.guestPort)]) {
    // libslirp splits the command at spaces, and a comma would end the -netdev option.
    if (!SAFE_WORD.test(w)) throw new Error(`cannot use ${JSON.stringify(w)} in a guestfwd command`);
  }
  return {
    qemu: [
      "-netdev", `user,id=vbxnet,restrict=on,guestfwd=tcp:${e.guestIp}:${e.guestPort}-cmd:${nodeBinary} ${relay} ${e.host} ${e.port}`,
      "-device", "virtio-net-device,netdev=vbxnet",
    ],
    kernel: ["voidbox.net=1"],
  };
}
