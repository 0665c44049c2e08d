/**
 * deploy/voidbox.service: `systemd-analyze verify` accepts it without a single warning,
 * and it carries the hardening a VM-launching daemon needs. verify checks that
 * ExecStart's executable exists, so a copy is verified with /usr/bin/node replaced by
 * this test's node (the same binary wherever node lives); the script argument is not
 * checked by systemd. `make test` installs systemd (system-deps) when it is missing.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { REPO_ROOT, tmpDir } from "../helpers/daemon.js";

const UNIT = path.join(REPO_ROOT, "deploy", "voidbox.service");
const text = fs.readFileSync(UNIT, "utf8");
const analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].find((p) => fs.existsSync(p));
if (!analyze) console.warn("SKIP systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd; `make test` does)");

/** Key → values of the [Service] section (keys may repeat). */
function serviceSection(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) section = s[1];
    else if (section === "Service") {
      const i = line.indexOf("=");
      out.set(line.slice(0, i), [...(out.get(line.slice(0, i)) ?? []), line.slice(i + 1)]);
    }
  }
  return out;
}

describe("deploy/voidbox.service", () => {
  it.skipIf(!analyze)("passes systemd-analyze verify with no warnings", async () => {
    const dir = tmpDir("vbx-unit-");
    try {
      const copy = path.join(dir, "voidbox.service");
      expect(text).toMatch(/^ExecStart=\/usr\/bin\/node /m);
      fs.writeFileSync(copy, text.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `));
      const r = await promisify(execFile)(analyze!, ["verify", copy], { timeout: 60_000 }).then(
        (ok) => ({ code: 0, out: ok.stdout + ok.stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` }),
      );
      // verify exits 0 on unknown keys (it only warns): any output is a failure here.
      expect(r).toEqual({ code: 0, out: "" });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs as its own user in the kvm group, with its directories, limits and hardening", () => {
    const s = serviceSection();
    const one = (k: string) => s.get(k)?.[0];
    expect(one("User")).toBe("voidbox");
    expect(one("SupplementaryGroups")).toBe("kvm");
    expect(one("StateDirectory")).toBe("voidbox");
    expect(one("RuntimeDirectory")).toBe("voidbox");
    expect(one("ExecStart")).toContain("--listen unix://%t/voidbox/voidbox.sock --state-dir %S/voidbox");
    for (const [k, v] of Object.entries({ ProtectSystem: "strict", NoNewPrivileges: "yes", PrivateTmp: "yes", ProtectHome: "yes", KillMode: "mixed" })) expect(one(k), k).toBe(v);
    expect(Number(one("LimitNOFILE"))).toBeGreaterThanOrEqual(4096);
    expect(Number(one("TasksMax"))).toBeGreaterThan(0);
    expect(s.get("DeviceAllow")).toEqual(["/dev/kvm rw"]);
    expect(s.has("ExecReload")).toBe(false);
    // The daemon gives itself 30 s to shut down (then exits 1): systemd must wait longer before SIGKILL.
    expect(Number(/^(\d+)s$/.exec(one("TimeoutStopSec") ?? "")?.[1])).toBeGreaterThan(30);
  });
});
