/**
 * GET /metrics: Prometheus text that a strict parser accepts, behind the bearer token on
 * TCP like every route, with counters that move with a run (a fake micro-VM sandbox, so
 * boot times and VMs live are exercised without QEMU).
 */
import { afterEach, describe, expect, it } from "vitest";
import type { Daemon } from "../../src/server.js";
import { gateReply } from "../helpers/conformance.js";
import { FakeVms } from "./fake-vm.js";
import { parsePrometheusText, value, type Family } from "./prom-text.js";
import { startDaemon, tmpDir } from "../helpers/daemon.js";
import { workflow, writeSpec } from "../helpers/specs.js";
import { waitFor } from "../helpers/wait.js";

const TOKEN = "metrics-test-token";
let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});

async function call(url: string, method: string, p: string, opts: { body?: unknown; token?: string | null } = {}) {
  const headers: Record<string, string> = {};
  if (opts.token !== null) headers.authorization = `Bearer ${opts.token ?? TOKEN}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(url + p, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const body = Buffer.from(await res.arrayBuffer());
  gateReply({ method, path: p, status: res.status, headers: res.headers, body });
  const text = body.toString("utf8");
  return { status: res.status, contentType: res.headers.get("content-type") ?? "", text, json: /json/.test(res.headers.get("content-type") ?? "") ? JSON.parse(text) : undefined };
}

async function scrape(url: string): Promise<Map<string, Family>> {
  const r = await call(url, "GET", "/metrics");
  expect(r.status).toBe(200);
  expect(r.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(r.text);
}

describe("GET /metrics", () => {
  it("needs the token on TCP, parses strictly, and its counters move with a run", async () => {
    const dir = tmpDir("vbx-metrics-");
    const vms = new FakeVms();
    const started = await startDaemon(dir + "/state", { vm: vms.provider(), auth: { token: TOKEN } });
    daemon = started.d;
    const { url } = started;

    const denied = await call(url, "GET", "/metrics", { token: null });
    expect(denied.status).toBe(401);
    expect(denied.json.code).toBe("UNAUTHORIZED");

    const before = await scrape(url);
    for (const name of [
      "voidbox_runs_total",
      "voidbox_stage_duration_seconds",
      "voidbox_vm_boot_seconds",
      "voidbox_vms_live",
      "voidbox_warm_pool_requests_total",
      "voidbox_event_append_seconds",
      "voidbox_http_requests_total",
      "voidbox_state_dir_free_bytes",
    ])
      expect(before.has(name), name).toBe(true);
    expect(value(before, "voidbox_runs_total", { outcome: "succeeded" })).toBe(0);
    expect(value(before, "voidbox_warm_pool_requests_total", { result: "hit" })).toBe(0);
    expect(value(before, "voidbox_state_dir_free_bytes")).toBeGreaterThan(0);
    const appendsBefore = value(before, "voidbox_event_append_seconds_count")!;

    const spec = writeSpec(dir, { ...workflow("metered", [{ name: "work", run: { program: "sh", args: ["-c", "true"] } }]), sandbox: { mode: "local", memory_mb: 128 } });
    const created = await call(url, "POST", "/v1/runs", { body: { file: spec } });
    expect(created.status).toBe(200);
    const id = created.json.run_id as string;
    await waitFor(() => vms.live.size === 1, "the run's VM");
    const during = await scrape(url);
    expect(value(during, "voidbox_vms_live")).toBe(1);
    expect(value(during, "voidbox_runs_active")).toBe(1);
    expect(value(during, "voidbox_vm_boot_seconds_count", { kind: "cold" })).toBe(1);
    expect(value(during, "voidbox_vm_boot_seconds_sum", { kind: "cold" })).toBeCloseTo(0.042);

    vms.finish(id);
    await waitFor(async () => (await call(url, "GET", `/v1/runs/${id}`)).json.status === "succeeded", "the run to succeed");
    const after = await scrape(url);
    expect(value(after, "voidbox_runs_total", { outcome: "succeeded" })).toBe(1);
    expect(value(after, "voidbox_runs_total", { outcome: "failed" })).toBe(0);
    expect(value(after, "voidbox_stage_duration_seconds_count", { outcome: "succeeded" })).toBe(1);
    expect(value(after, "voidbox_vms_live")).toBe(0);
    expect(value(after, "voidbox_event_append_seconds_count")).toBeGreaterThan(appendsBefore);
    expect(value(after, "voidbox_http_requests_total", { route: "/v1/runs", method: "POST", status: "200" })).toBe(1);
    expect(value(after, "voidbox_http_requests_total", { route: "/v1/runs/{run_id}", method: "GET", status: "200" })).toBeGreaterThanOrEqual(1);
    expect(value(after, "voidbox_http_requests_total", { route: "/metrics", method: "GET", status: "401" })).toBe(1);
    // Route labels are templates: no run id ever becomes a label value.
    const routes = after.get("voidbox_http_requests_total")!.samples.map((s) => s.labels.route);
    expect(routes.some((r) => r.includes(id))).toBe(false);
  });

  it("unknown paths are counted under one label, and each daemon has its own registry", async () => {
    const dir = tmpDir("vbx-metrics-");
    const a = await startDaemon(dir + "/a");
    daemon = a.d;
    const { d: other, url: otherUrl } = await startDaemon(dir + "/b");
    try {
      const { url } = a;
      for (const p of ["/nope/1", "/nope/2"]) expect((await call(url, "GET", p, { token: null })).status).toBe(404);
      const m = await scrape(url);
      expect(value(m, "voidbox_http_requests_total", { route: "unmatched", status: "404" })).toBe(2);
      const o = await scrape(otherUrl);
      expect(value(o, "voidbox_http_requests_total", { route: "unmatched", status: "404" })).toBeUndefined();
    } finally {
      await other.close();
    }
  });

  it("the parser is strict", () => {
    expect(() => parsePrometheusText("x 1\n")).toThrow(/no TYPE/);
    expect(() => parsePrometheusText("# TYPE x counter\nx{a=b} 1\n")).toThrow(/not quoted/);
    expect(() => parsePrometheusText("# TYPE x gauge\nx 1\nx 2\n")).toThrow(/duplicate/);
    expect(() => parsePrometheusText('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n')).toThrow(/cumulative/);
    expect(() => parsePrometheusText("# TYPE x gauge\nx one\n")).toThrow(/bad value/);
    expect(parsePrometheusText('# HELP x a gauge\n# TYPE x gauge\nx{a="q\\"z"} 1.5e3\n').get("x")!.samples[0]).toEqual({ name: "x", labels: { a: 'q"z' }, value: 1500 });
  });
});
