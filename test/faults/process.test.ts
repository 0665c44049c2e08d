// Process and transport faults: connection floods against the fd limit and the
// connection cap, two daemons on one state dir, QEMU outliving a killed daemon, and
// startup input no client could ever use. Each test says what happened before.
// The daemon is the built one (dist/src/main.js) unless the test is about createDaemon.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { checkToken } from "../../src/config.js";
import { isLoopbackHost, MAX_UNIX_PATH_BYTES, parseListen } from "../../src/http/listen.js";
import { createDaemon, type Daemon } from "../../src/server.js";
import { PROJECT_ROOT } from "../../src/openapi-document.js";
import { findGuestImage, qemuAvailable } from "../../src/sandbox/qemu/index.js";
import { pidAlive } from "../helpers/process.js";
import { alive, childEnv, killHard, spawnDaemon, waitListening, startDaemonProcess, tmpDir, type DaemonProc } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { TERMINAL } from "../helpers/runs.js";
import type { RunState } from "../helpers/types.js";
import { writeSpec, programWorkflow } from "../helpers/specs.js";
import { waitFor, withTimeout } from "../helpers/wait.js";

const procs: DaemonProc[] = [];
const dirs: string[] = [];
const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const p of procs.splice(0)) await killHard(p).catch(() => undefined);
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function home(): string {
  const h = tmpDir("vbx-fault-proc-");
  dirs.push(h);
  fs.mkdirSync(path.join(h, "run"), { recursive: true });
  return h;
}

async function daemon(args: string[], h: string): Promise<DaemonProc> {
  const p = await startDaemonProcess({ args: [...args, "--accel", "tcg"], env: childEnv(h) });
  procs.push(p);
  return p;
}

/** Log records at warn level or above whose message matches. */
function logged(p: DaemonProc, re: RegExp): boolean {
  return p.lines.some((l) => l.rec && (l.rec.level as number) >= 40 && re.test(String(l.rec.msg)));
}

interface FloodConn {
  socket: net.Socket;
  /** Bytes the server sent back. */
  reply: string;
  closed: boolean;
}

/**
 * Opens `n` connections that each send an incomplete request head (or nothing, when
 * `head` is empty) and then go quiet, like a slowloris client that never authenticates.
 */
async function flood(url: string, n: number, head = "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: "): Promise<FloodConn[]> {
  const u = new URL(url);
  const conns: FloodConn[] = [];
  const batch = 50;
  for (let i = 0; i < n; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, n - i) }, () => {
        const c: FloodConn = { socket: net.connect(Number(u.port), u.hostname), reply: "", closed: false };
        conns.push(c);
        c.socket.setEncoding("latin1");
        c.socket.on("data", (d: string) => (c.reply += d));
        c.socket.on("error", () => undefined);
        c.socket.on("close", () => (c.closed = true));
        return new Promise<void>((resolve) => {
          c.socket.once("connect", () => {
            if (head) c.socket.write(head);
            resolve();
          });
          c.socket.once("close", () => resolve());
        });
      }),
    );
  }
  cleanups.push(() => conns.forEach((c) => c.socket.destroy()));
  return conns;
}

describe("connection floods", () => {
  // Before: connections could use every fd the process had; the run store then failed
  // to open run.json (EMFILE) and the daemon exited 1, losing every run on it.
  it.skipIf(!fs.existsSync("/usr/bin/prlimit"))(
    "a connection flood under a 128-fd limit: the excess is refused, a run in flight completes, the daemon serves again once the flood stops",
    async () => {
      const h = home();
      const p = spawnDaemon({
        args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--no-auth", "--headers-timeout", "2000", "--accel", "tcg"],
        env: childEnv(h),
        wrap: ["prlimit", "--nofile=128:128", "--"],
      });
      procs.push(p);
      const [url] = await waitListening(p, 1);
      const spec = writeSpec(h, programWorkflow("slow.yaml", [
        { name: "a", program: "sleep", args: ["2"] },
        { name: "b", program: "echo", args: ["hi"], depends_on: ["a"] },
        { name: "c", program: "sleep", args: ["1"], depends_on: ["b"] },
      ]), "slow.yaml");
      expect((await sdk(url).api.POST("/v1/runs", { body: { file: spec, run_id: "in-flight" } })).response.status).toBe(200);

      // Held open by the client; only the daemon's refusals and timeouts can close them.
      const conns = [...(await flood(url, 150, "")), ...(await flood(url, 150))];
      await waitFor(() => conns.every((c) => c.closed) || !alive(p), () => `${conns.filter((c) => !c.closed).length} flood connections still open\n${p.output()}`, 30_000);
      expect(alive(p), p.output()).toBe(true);
      expect(logged(p, /connection limit reached/), p.output()).toBe(true);

      expect((await sdk(url).api.GET("/v1/health")).response.status).toBe(200);
      let run: RunState | undefined;
      await waitFor(async () => TERMINAL.has((run = (await sdk(url).getRun("in-flight")) as RunState).status), () => JSON.stringify(run), 20_000);
      expect(run!.status, run!.error ?? "").toBe("succeeded");
    },
    90_000,
  );

  // Before: --max-connections and the timeouts were passed to listen() but no cap was
  // set, a connection that sent nothing was never closed, and partial heads were only
  // checked every 30 s: 10,200 such connections exhausted the fds.
  it("over --max-connections new connections are refused; silent and partial connections are cut after --headers-timeout; then it serves again", async () => {
    const h = home();
    // The timeout outlasts the whole flood even on a loaded host: an accepted connection
    // cut before the last ones arrive would free a slot, and more than 20 would be answered.
    const p = await daemon(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--no-auth", "--max-connections", "20", "--headers-timeout", "5000"], h);
    const url = p.urls[0];
    const silent = await flood(url, 5, "");
    const partial = await flood(url, 55);
    const all = [...silent, ...partial];
    await waitFor(() => all.every((c) => c.closed), () => `${all.filter((c) => !c.closed).length} connections still open\n${p.output()}`, 20_000);
    // 20 were accepted (and timed out, the partial ones with a 408); the others were dropped unanswered.
    const answered = all.filter((c) => c.reply.length > 0);
    const dropped = all.filter((c) => c.reply.length === 0);
    expect(dropped.length, p.output()).toBeGreaterThanOrEqual(all.length - 20);
    for (const c of answered) expect(c.reply).toMatch(/^HTTP\/1\.1 408/);
    expect(logged(p, /connection limit reached/), p.output()).toBe(true);
    expect(alive(p)).toBe(true);
    expect((await sdk(url).api.GET("/v1/health")).response.status).toBe(200);
  }, 60_000);
});

describe("one daemon per state dir", () => {
  // Before: the second daemon started silently, killed the first one's live micro-VMs
  // as "leftovers" (this fake QEMU stands in for one), and both served the same runs.
  it("a second createDaemon on the same state dir is refused naming the holder, before it touches the first daemon's VMs", async () => {
    const h = home();
    const state = path.join(h, "state");
    const first: Daemon = await createDaemon({ stateDir: state, vm: false });
    cleanups.push(() => first.close());
    const l = await first.listen("tcp://127.0.0.1:0");

    // A live "micro-VM" of the first daemon: argv[0] qemu-system-…, its marker in argv, a pid file.
    const marker = "voidbox-run1-main-0-deadbeef";
    const fake: ChildProcess = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", marker], { argv0: "qemu-system-x86_64", stdio: "ignore" });
    cleanups.push(() => void fake.kill("SIGKILL"));
    await waitFor(() => fs.existsSync(`/proc/${fake.pid}/cmdline`) && fs.readFileSync(`/proc/${fake.pid}/cmdline`, "latin1").includes(marker), "fake VM did not start", 10_000);
    fs.mkdirSync(path.join(state, "vms"), { recursive: true });
    fs.writeFileSync(path.join(state, "vms", `${marker}.json`), JSON.stringify({ pid: fake.pid, runId: "run1", stage: "main", startedAt: new Date().toISOString(), marker }));

    // The second daemon would run the leftover-VM cleanup (vm detection on).
    const err = await createDaemon({ stateDir: state, vm: { accel: "tcg" } }).then(
      (d) => {
        cleanups.push(() => d.close());
        return null;
      },
      (e: Error) => e,
    );
    expect(err, "the second daemon must be refused").toBeInstanceOf(Error);
    expect(err!.message).toContain(`pid ${process.pid}`);
    expect(err!.message).toContain(l.url);
    expect(err!.message).toContain("--state-dir");
    expect(pidAlive(fake.pid!), "the first daemon's VM must survive").toBe(true);
    expect((await sdk(l.url).api.GET("/v1/health")).response.status).toBe(200);

    // Released on close: a new daemon on the same state dir starts.
    await first.close();
    const again = await createDaemon({ stateDir: state, vm: false });
    await again.close();
  }, 60_000);

  // Before: every one of them started. A lock file taken over after a crash would need a
  // takeover protocol in which two starting daemons can both win.
  it("of five daemons started at once on one state dir exactly one starts", async () => {
    const h = home();
    const state = path.join(h, "state");
    fs.mkdirSync(state, { recursive: true });
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => createDaemon({ stateDir: state, vm: false })));
    const started = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    for (const d of started) cleanups.push(() => d.close());
    expect(started.length).toBe(1);
    for (const r of results) if (r.status === "rejected") expect(String(r.reason)).toContain(`pid ${process.pid}`);
  }, 60_000);

  // Before: the second `voidbox serve` started silently on the same state dir.
  it("a second `voidbox serve` exits 2 naming the holder's pid and URL; after kill -9 of the holder a new daemon starts", async () => {
    const h = home();
    const state = path.join(h, "state");
    const first = await daemon(["--listen", "tcp://127.0.0.1:0", "--state-dir", state, "--no-auth"], h);
    const second = spawnDaemon({ args: ["--listen", "tcp://127.0.0.1:0", "--state-dir", state, "--no-auth", "--accel", "tcg"], env: childEnv(h) });
    procs.push(second);
    const exit = await withTimeout(second.exited, 30_000, `second daemon did not exit\n${second.output()}`);
    expect(exit.code, second.output()).toBe(2);
    expect(second.urls).toEqual([]);
    expect(second.stderr()).toContain(`pid ${first.pid}`);
    expect(second.stderr()).toContain(first.urls[0]);
    expect(alive(first)).toBe(true);
    expect((await sdk(first.urls[0]).api.GET("/v1/health")).response.status).toBe(200);

    // kill -9 leaves nothing stale: the kernel released the lock with the process.
    await killHard(first);
    const third = await daemon(["--listen", "tcp://127.0.0.1:0", "--state-dir", state, "--no-auth"], h);
    expect((await sdk(third.urls[0]).api.GET("/v1/health")).response.status).toBe(200);
  }, 90_000);
});

const qemuReady = qemuAvailable() && findGuestImage(PROJECT_ROOT) !== null;

/** Gone, or a zombie nobody reaped yet (PID 1 of a container may not reap): either way not running. */
function processGone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    return /^[ZX]$/.test(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
  } catch {
    return true;
  }
}

describe.skipIf(!qemuReady)("QEMU dies with its daemon", () => {
  // Before: a daemon killed by SIGKILL left its QEMU running (a fork bomb in the guest
  // kept burning the host's CPU) until the next daemon start found the pid file.
  it("kill -9 of the daemon during a micro-VM step: that QEMU exits", async () => {
    const h = home();
    const p = await daemon(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--no-auth"], h);
    const url = p.urls[0];
    // A guest that cannot shut itself down, deterministically (a fork bomb does the same,
    // slowly and at random): the guest init, on losing the host channel, reports to
    // /dev/console and powers off; with /dev/console a FIFO nobody reads it blocks there.
    const spec = path.join(h, "stuck.yaml");
    fs.writeFileSync(
      spec,
      "api_version: v1\nkind: workflow\nname: stuck\nsandbox: {mode: local, memory_mb: 256}\nworkflow:\n  steps:\n    - name: stuck\n" +
        '      run: {program: sh, args: ["-c", "rm -f /dev/console && mkfifo /dev/console && sleep 300"]}\n',
    );
    expect((await sdk(url).api.POST("/v1/runs", { body: { file: spec, run_id: "stuck" } })).response.status).toBe(200);

    let qemuPid = 0;
    let run: RunState | undefined;
    try {
      await waitFor(
        async () => {
          run = (await sdk(url).getRun("stuck")) as RunState;
          const spawned = run.events.find((e) => e.event_type === "microvm.spawned") as { payload?: { pid?: number } } | undefined;
          qemuPid = spawned?.payload?.pid ?? 0;
          return qemuPid > 0 || TERMINAL.has(run.status);
        },
        () => `no microvm.spawned event: ${JSON.stringify(run)?.slice(0, 1000)}`,
        120_000,
      );
      expect(qemuPid, JSON.stringify(run).slice(0, 1000)).toBeGreaterThan(0);
      expect(fs.readFileSync(`/proc/${qemuPid}/cmdline`, "latin1")).toMatch(/qemu-system/);

      await killHard(p);
      await waitFor(() => processGone(qemuPid), `QEMU pid ${qemuPid} still running after its daemon was killed`, 15_000);
    } finally {
      // Never leak the VM, whatever failed above.
      if (qemuPid > 0 && !processGone(qemuPid)) {
        try {
          process.kill(qemuPid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
  }, 180_000);
});

describe("startup refusals", () => {
  function tokenFile(h: string, content: string | Buffer): string {
    const f = path.join(h, "token");
    fs.writeFileSync(f, content, { mode: 0o600 });
    return f;
  }

  async function expectRefused(args: string[], env: NodeJS.ProcessEnv, mention: RegExp): Promise<DaemonProc> {
    const p = spawnDaemon({ args: [...args, "--accel", "tcg"], env });
    procs.push(p);
    const exit = await withTimeout(p.exited, 30_000, `daemon did not exit\n${p.output()}`);
    expect(exit.code, p.output()).toBe(2);
    expect(p.urls, "must not listen").toEqual([]);
    expect(p.stderr()).toMatch(mention);
    return p;
  }

  // Before: bind() truncated the path to 107 bytes silently; the daemon listened on (and
  // left behind) a socket nobody asked for.
  it("a --listen unix:// path over 107 bytes", async () => {
    const h = home();
    const dir = path.join(h, "d".repeat(Math.max(1, 140 - h.length)));
    fs.mkdirSync(dir);
    const sock = path.join(dir, "voidbox.sock");
    expect(Buffer.byteLength(sock)).toBeGreaterThan(107);
    await expectRefused(["--listen", `unix://${sock}`, "--state-dir", path.join(h, "state")], childEnv(h), /--listen .*107/);
    expect(fs.readdirSync(dir), "no truncated socket left behind").toEqual([]);
  }, 60_000);

  // Before: the daemon started with a token no client can send in a header.
  it.each([
    ["a space", "abc def"],
    ["a NUL", "abc\u0000def"],
    ["non-ASCII", "tökén"],
  ])("a token file with %s", async (_what, token) => {
    const h = home();
    const tf = tokenFile(h, token + "\n");
    const p = await expectRefused(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state"), "--token-file", tf], childEnv(h), /token file .*bearer token/);
    expect(p.stderr()).toContain(tf);
  }, 60_000);

  it("$VOIDBOX_DAEMON_TOKEN with a space", async () => {
    const h = home();
    await expectRefused(["--listen", "tcp://127.0.0.1:0", "--state-dir", path.join(h, "state")], childEnv(h, { VOIDBOX_DAEMON_TOKEN: "two words" }), /\$VOIDBOX_DAEMON_TOKEN/);
  }, 60_000);

  // Before: a warning only, and the daemon served every network it was reachable from without auth.
  it.each(["tcp://0.0.0.0:0", "tcp://[::]:0"])("--no-auth on the non-loopback address %s", async (listen) => {
    const h = home();
    await expectRefused(["--listen", listen, "--state-dir", path.join(h, "state"), "--no-auth"], childEnv(h), /--no-auth/);
  }, 60_000);

  it("--no-auth on loopback still starts (with its warning)", async () => {
    const h = home();
    const p = await daemon(["--listen", "tcp://localhost:0", "--state-dir", path.join(h, "state"), "--no-auth"], h);
    expect(logged(p, /no-auth/)).toBe(true);
  }, 60_000);

  it("the rules accept what clients can use: b64token tokens, 107-byte socket paths, loopback hosts", () => {
    for (const t of ["0f".repeat(32), "abc-._~+/XYZ09", "dG9rZW4=", "dG9r=="]) expect(checkToken(t, "t")).toBe(t);
    for (const t of ["a b", "a\tb", "a=b", "=", "tök", "a\u0000"]) expect(() => checkToken(t, "t"), JSON.stringify(t)).toThrow(/bearer token/);
    const p107 = "/" + "s".repeat(MAX_UNIX_PATH_BYTES - 1);
    expect(parseListen(`unix://${p107}`)).toEqual({ kind: "unix", path: p107 });
    expect(() => parseListen(`unix://${p107}s`)).toThrow(/108 bytes/);
    expect(() => parseListen(`unix:///tmp/${"é".repeat(60)}`)).toThrow(/bytes/);
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.com", "128.0.0.1"]) expect(isLoopbackHost(h), h).toBe(false);
  });

  it("`voidbox serve --help` prints the serve flags, limits included", () => {
    const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, "dist", "src", "main.js"), "serve", "--help"], { encoding: "utf8", timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    for (const flag of ["--listen", "--no-auth", "--max-connections", "--headers-timeout", "--request-timeout", "--idle-timeout"]) expect(r.stdout).toContain(flag);
  });
});
