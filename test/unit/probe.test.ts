/**
 * The guest-boot probe off the critical path: /v1/health answers while it runs, runs
 * that need a micro-VM wait for it (bounded), its verdict is cached per host/QEMU/guest
 * image, and a host where QEMU cannot boot a guest is reported as degraded (with QEMU's
 * message) while mock runs keep working. QEMU is a fake script here: no VM is booted.
 */
import { afterAll, describe, expect, it } from "vitest";
import fs from "node:fs";
import path from "node:path";
import { validateResponse } from "../helpers/openapi.js";
import { liveVmCount } from "../../src/sandbox/qemu/index.js";
import { probeGuest } from "../../src/sandbox/guest-probe.js";
import type { Accelerator } from "../../src/sandbox/types.js";
import {
  PROBE_CACHE_FILE,
  probeIdentity,
  probeKey,
  qemuVersion,
  readProbeCache,
  writeProbeCache,
  type CachedProbe,
  type ProbeIdentity,
} from "../../src/sandbox/probe-cache.js";
import { startDaemon, tmpDir, type TestDaemon } from "../helpers/daemon.js";
import { sdk } from "../helpers/sdk.js";
import { createRun, waitForTerminal } from "../helpers/runs.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

const work = tmpDir("vbx-probe-");
const QEMU_MESSAGE = "qemu-system-x86_64: -accel tcg,thread=single: invalid accelerator tcg";

/** A stand-in for qemu-system-x86_64: answers --version, then `body` for a boot. */
function fakeQemu(name: string, body: string): string {
  const file = path.join(work, name);
  fs.writeFileSync(file, `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "QEMU emulator version 7.2.99 (${name})"; exit 0; fi\n${body}\n`, { mode: 0o755 });
  return file;
}
const FAILING = fakeQemu("qemu-failing", `echo "${QEMU_MESSAGE}" >&2\nexit 1`);
// exec: the pid QemuVm kills is the sleeping process itself.
const HANGING = fakeQemu("qemu-hanging", "exec sleep 120");
// Refuses KVM (as on a host whose /dev/kvm cannot run this guest) and TCG with different words.
const PICKY = fakeQemu(
  "qemu-picky",
  `case "$*" in *"-accel kvm"*) echo "qemu-system-x86_64: failed to initialize kvm: Operation not permitted" >&2;; *) echo "${QEMU_MESSAGE}" >&2;; esac\nexit 1`,
);

function guestImage(name: string, size = 16): { kernel: string; initramfs: string } {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "vmlinux"), Buffer.alloc(size, 1));
  fs.writeFileSync(path.join(dir, "initramfs.cpio.lz4"), Buffer.alloc(8, 2));
  return { kernel: path.join(dir, "vmlinux"), initramfs: path.join(dir, "initramfs.cpio.lz4") };
}

const specDir = tmpDir("vbx-probe-specs-");
const steps = [
  { name: "hi", run: { program: "echo", args: ["hi"] } },
  { name: "shout", depends_on: ["hi"], run: { program: "tr", args: ["a-z", "A-Z"] } },
];
const LOCAL = writeSpec(specDir, { ...workflow("local", steps), sandbox: { mode: "local" } });
const AUTO = writeSpec(specDir, { ...workflow("auto", steps), sandbox: { mode: "auto" } });
const MOCK = writeSpec(specDir, workflow("mock", steps));

const open: TestDaemon[] = [];
afterAll(async () => {
  for (const t of open) await t.d.close();
  expect(liveVmCount()).toBe(0);
  fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(specDir, { recursive: true, force: true });
});

async function daemon(qemuBinary: string, image: { kernel: string; initramfs: string }, stateDir = tmpDir(), probeTimeoutMs = 20_000) {
  const t = await startDaemon(stateDir, {
    vm: { accel: "tcg", qemuBinary, ...image },
    limits: { guestProbeTimeoutMs: probeTimeoutMs },
  });
  open.push(t);
  return t;
}

async function health(t: TestDaemon) {
  const r = await sdk(t.url).api.GET("/v1/health");
  expect(r.response.status).toBe(200);
  expect(validateResponse("getHealth", 200, r.data)).toEqual([]);
  return r.data!;
}

const settledHealth = (t: TestDaemon) => waitFor(async () => {
  const h = await health(t);
  return h.guest_boot !== "probing" ? h : undefined;
}, "the guest-boot probe to settle");

async function identityOf(qemuBinary: string, image: { kernel: string; initramfs: string }): Promise<ProbeIdentity> {
  const v = await qemuVersion(qemuBinary);
  if (!v.ok) throw new Error(v.reason);
  return probeIdentity({ qemuBinary, qemuVersion: v.version, ...image, accel: "tcg" });
}

function cacheEntry(identity: ProbeIdentity, accelerator: Accelerator = "tcg"): CachedProbe {
  return { key: probeKey(identity), identity, accelerator, boot_ms: 700, probed_at: new Date().toISOString() };
}

describe("probe cache", () => {
  it("returns what was written for the same key, nothing for another", async () => {
    const dir = tmpDir();
    const id = await identityOf(FAILING, guestImage("c1"));
    expect(readProbeCache(dir, probeKey(id))).toBeNull();
    expect(writeProbeCache(dir, cacheEntry(id, "kvm"))).toBe(true);
    expect(readProbeCache(dir, probeKey(id))).toMatchObject({ accelerator: "kvm", boot_ms: 700 });
    expect(readProbeCache(dir, probeKey({ ...id, host_kernel: id.host_kernel + "-other" }))).toBeNull();
  });

  it("keys on the host kernel, QEMU, guest kernel and initramfs files, accelerator and /dev/kvm", async () => {
    const image = guestImage("c2");
    const id = await identityOf(FAILING, image);
    const keys = new Set([
      probeKey(id),
      probeKey({ ...id, host_kernel: "other" }),
      probeKey({ ...id, qemu: "QEMU emulator version 9" }),
      probeKey({ ...id, accel: "auto" }),
      probeKey({ ...id, kvm_usable: !id.kvm_usable }),
    ]);
    fs.writeFileSync(image.kernel, Buffer.alloc(32, 3)); // rebuilt guest kernel: new size/mtime
    keys.add(probeKey(await identityOf(FAILING, image)));
    fs.writeFileSync(image.initramfs, Buffer.alloc(64, 3));
    keys.add(probeKey(await identityOf(FAILING, image)));
    keys.add(probeKey(await identityOf(HANGING, image))); // another QEMU binary
    expect(keys.size).toBe(8);
  });

  it("treats a corrupt cache file as empty and keeps a bounded number of entries", async () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, PROBE_CACHE_FILE), "{not json");
    const id = await identityOf(FAILING, guestImage("c3"));
    expect(readProbeCache(dir, probeKey(id))).toBeNull();
    for (let i = 0; i < 20; i++) writeProbeCache(dir, cacheEntry({ ...id, host_kernel: `k${i}` }));
    const file = JSON.parse(fs.readFileSync(path.join(dir, PROBE_CACHE_FILE), "utf8"));
    expect(file.entries).toHaveLength(8);
    expect(readProbeCache(dir, probeKey({ ...id, host_kernel: "k19" }))).not.toBeNull();
    expect(readProbeCache(dir, probeKey({ ...id, host_kernel: "k0" }))).toBeNull();
  });

  it("a cache that cannot be written is reported, not thrown", async () => {
    const id = await identityOf(FAILING, guestImage("c4"));
    const notADir = path.join(work, "plain-file");
    fs.writeFileSync(notADir, "x");
    expect(writeProbeCache(notADir, cacheEntry(id))).toBe(false);
  });
});

describe("probeGuest", () => {
  it("auto tries KVM first when /dev/kvm is usable, then TCG, and reports both failures (newest first)", async () => {
    const r = await probeGuest({ ...guestImage("picky"), accel: "auto", kvmUsable: true, deadlineMs: 10_000, qemuBinary: PICKY });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.reason).toMatch(/^tcg: .*invalid accelerator tcg/);
    expect(r.failures.map((f) => f.accelerator)).toEqual(["tcg", "kvm"]);
    expect(r.failures[1].reason).toContain("failed to initialize kvm");
  });

  it("auto without a usable /dev/kvm boots TCG only; forced kvm without it fails without starting QEMU", async () => {
    const r = await probeGuest({ ...guestImage("picky2"), accel: "auto", kvmUsable: false, deadlineMs: 10_000, qemuBinary: PICKY });
    expect(r.failures.map((f) => f.accelerator)).toEqual(["tcg"]);
    const forced = await probeGuest({ ...guestImage("picky3"), accel: "kvm", kvmUsable: false, deadlineMs: 10_000, qemuBinary: "/nonexistent/qemu" });
    expect(forced).toMatchObject({ ok: false, reason: expect.stringContaining("/dev/kvm") });
  });
});

describe("background probe", () => {
  it("health answers at once with `probing`; a local run waits for the probe, bounded by --probe-timeout", async () => {
    const t = await daemon(HANGING, guestImage("hang"), tmpDir(), 1500);
    const h = await health(t);
    expect(h).toMatchObject({ status: "ok", accelerator: "probing", guest_boot: "probing", guest_boot_error: null, guest_probe: null });
    expect(h.sandbox_modes).toContain("local");

    const id = await createRun(t.url, LOCAL);
    const st = await waitForTerminal(t.url, id);
    expect(st.status).toBe("failed");
    expect(st.error).toContain("no ready marker within 1500 ms");
    const after = await health(t);
    expect(after).toMatchObject({ status: "degraded", guest_boot: "failed", accelerator: null });
    expect(after.guest_probe).toMatchObject({ cached: false });
    expect(after.guest_probe!.duration_ms).toBeGreaterThanOrEqual(1500);
    expect(liveVmCount()).toBe(0);
  });

  it("QEMU that cannot boot a guest: degraded with QEMU's message; local fails fast; mock and auto runs still work", async () => {
    const t = await daemon(FAILING, guestImage("fail"));
    const h = await settledHealth(t);
    expect(h).toMatchObject({ status: "degraded", accelerator: null, guest_boot: "failed", sandbox_modes: ["mock", "auto"] });
    expect(h.guest_boot_error).toContain(QEMU_MESSAGE);
    expect(h.guest_boot_error).toContain("QEMU exited during boot (code 1");
    expect(h.recent_boot_failures![0]).toMatchObject({ source: "probe", accelerator: "tcg", run_id: null });
    expect(h.recent_boot_failures![0].reason).toContain(QEMU_MESSAGE);

    const local = await waitForTerminal(t.url, await createRun(t.url, LOCAL));
    expect(local.status).toBe("failed");
    expect(local.error).toContain(QEMU_MESSAGE);
    expect(local.events.map((e: { event_type: string }) => e.event_type)).not.toContain("microvm.spawned");

    const mock = await waitForTerminal(t.url, await createRun(t.url, MOCK));
    expect(mock.error).toBeNull();
    expect(mock.status).toBe("succeeded");
    const auto = await waitForTerminal(t.url, await createRun(t.url, AUTO));
    expect(auto).toMatchObject({ status: "succeeded", sandbox_mode: "mock" });
    // A failed probe is not cached: the next start probes again.
    expect(fs.existsSync(path.join(t.stateDir, PROBE_CACHE_FILE))).toBe(false);
  });

  it("a cached verdict settles without booting; a rebuilt guest kernel is probed again", async () => {
    const image = guestImage("cached");
    const stateDir = tmpDir();
    // The fake fails every boot: `ok` can only come from the cache.
    writeProbeCache(stateDir, cacheEntry(await identityOf(FAILING, image)));
    const t = await daemon(FAILING, image, stateDir);
    const h = await settledHealth(t);
    expect(h).toMatchObject({ status: "ok", accelerator: "tcg", guest_boot: "ok", guest_boot_error: null, recent_boot_failures: [] });
    expect(h.guest_probe).toMatchObject({ cached: true });

    // Real stage boots that fail are listed too.
    const run = await waitForTerminal(t.url, await createRun(t.url, LOCAL, { policy: { max_stage_retries: 0 } }));
    expect(run.status).toBe("failed");
    const h2 = await health(t);
    expect(h2.recent_boot_failures![0]).toMatchObject({ source: "stage", accelerator: "tcg", run_id: run.id, stage: "hi" });
    expect(h2.recent_boot_failures![0].reason).toContain(QEMU_MESSAGE);
    await t.d.close();

    fs.writeFileSync(image.kernel, Buffer.alloc(48, 4));
    const t2 = await daemon(FAILING, image, stateDir);
    expect(await settledHealth(t2)).toMatchObject({ guest_boot: "failed", guest_probe: { cached: false } });
  });
});
