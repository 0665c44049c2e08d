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
import { createHash } from "node:crypto";
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

/** The relay script's path (written once per process, named by its content). */
export function relayScript(): string {
  if (relayFile && fs.existsSync(relayFile)) return relayFile;
  const hash = createHash("sha256").update(RELAY_SOURCE).digest("hex").slice(0, 16);
  const dir = path.join(os.tmpdir(), `voidbox-relay-${process.getuid?.() ?? "u"}`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `egress-${hash}.cjs`);
  if (!fs.existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, RELAY_SOURCE, { mode: 0o600 });
    fs.renameSync(tmp, file);
  }
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
