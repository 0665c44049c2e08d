/**
 * Pid files of live micro-VMs under the state dir, and the killing of QEMU processes a
 * dead daemon left behind (checked to be ours by their command line first).
 */
import { readdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../types.js";
import { liveVms } from "./registry.js";

export interface PidFile {
  pid: number;
  runId: string;
  stage: string;
  startedAt: string;
  marker: string;
}

function readCmdline(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter((s) => s.length > 0);
  } catch {
    return null;
  }
}

function isZombieOrGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}

/**
 * Kill QEMU processes recorded in `pidDir` (e.g. left by a crashed daemon): for each
 * pid file, SIGKILL the process only if /proc/<pid>/cmdline is a qemu-system process
 * carrying the file's marker; remove the pid file. Returns the number killed.
 * Waits (bounded, 3 s) for the killed processes to disappear.
 */
export async function killLeftoverVms(pidDir: string, log?: Logger): Promise<number> {
  let names: string[];
  try {
    names = readdirSync(pidDir).filter((n) => n.endsWith(".json"));
  } catch {
    return 0;
  }
  const killed: number[] = [];
  for (const name of names) {
    const file = path.join(pidDir, name);
    let info: PidFile | null = null;
    try {
      info = JSON.parse(readFileSync(file, "utf8")) as PidFile;
    } catch {
      info = null;
    }
    if (info && Number.isInteger(info.pid) && info.pid > 1 && typeof info.marker === "string") {
      const argv = readCmdline(info.pid);
      // Just after spawn the process may still be nice or setpriv, about to exec QEMU.
      const exe = argv?.[0] && ["setpriv", "nice"].includes(path.basename(argv[0])) ? argv.find((a) => path.basename(a).startsWith("qemu-system")) : argv?.[0];
      const isOurs = argv !== null && exe !== undefined && path.basename(exe).startsWith("qemu-system") && argv.includes(info.marker);
      if (isOurs) {
        try {
          process.kill(info.pid, "SIGKILL");
          killed.push(info.pid);
          log?.warn({ pid: info.pid, runId: info.runId, stage: info.stage, marker: info.marker }, "killed leftover micro-VM");
        } catch {
          // already gone
        }
      }
    }
    try {
      rmSync(file, { force: true });
    } catch {
      // ignore
    }
  }
  const deadline = Date.now() + 3000;
  while (killed.some((p) => !isZombieOrGone(p)) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  // Our own children: wait until they are reaped (and out of the registry).
  const ours = liveVms().filter((v) => killed.includes(v.pid));
  await Promise.all(ours.map((v) => v.waitExit(Math.max(0, deadline - Date.now()))));
  return killed.length;
}
