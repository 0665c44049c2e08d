import fs from "node:fs";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { BootObserver } from "./sandbox/gated.js";

/** Live values read at scrape time. */
export interface MetricSources {
  stateDir: string;
  vmsLive(): number;
  stagesWaiting(): number;
  activeRuns(): number;
  draining(): boolean;
}

/**
 * The daemon's Prometheus metrics, in a registry of its own (several daemons may live
 * in one process, as in the tests). Labels are bounded: outcomes and statuses are
 * enums, and HTTP routes are OpenAPI path templates, never raw paths.
 */
export class Metrics implements BootObserver {
  readonly registry = new Registry();
  private readonly runs: Counter<"outcome">;
  private readonly stageDuration: Histogram<"outcome">;
  private readonly vmBoot: Histogram<"kind">;
  private readonly warmPool: Counter<"result">;
  private readonly eventAppend: Histogram;
  private readonly http: Counter<"route" | "method" | "status">;

  constructor(src: MetricSources) {
    const registers = [this.registry];
    this.runs = new Counter({ name: "voidbox_runs_total", help: "Runs that reached a terminal state, by outcome.", labelNames: ["outcome"], registers });
    for (const outcome of ["succeeded", "failed", "cancelled"]) this.runs.inc({ outcome }, 0);
    this.stageDuration = new Histogram({
      name: "voidbox_stage_duration_seconds",
      help: "Duration of stage attempts (boot, command and output collection), by outcome.",
      labelNames: ["outcome"],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    });
    this.vmBoot = new Histogram({
      name: "voidbox_vm_boot_seconds",
      help: "Micro-VM boot time until the guest agent answered; warm = taken from a pre-booted pool, cold = booted for the stage.",
      labelNames: ["kind"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32],
      registers,
    });
    this.warmPool = new Counter({ name: "voidbox_warm_pool_requests_total", help: "Stage VMs asked of the warm pool, by result (hit|miss); 0 while the daemon has no pool (--warm-pool 0 or no micro-VMs).", labelNames: ["result"], registers });
    for (const result of ["hit", "miss"]) this.warmPool.inc({ result }, 0);
    this.eventAppend = new Histogram({
      name: "voidbox_event_append_seconds",
      help: "Time to append one run event to its log (write, not fsync).",
      buckets: [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1],
      registers,
    });
    this.http = new Counter({ name: "voidbox_http_requests_total", help: "HTTP requests answered, by OpenAPI route template, method and status.", labelNames: ["route", "method", "status"], registers });
    new Gauge({ name: "voidbox_vms_live", help: "Micro-VMs holding a node slot (booting, running or stopping).", registers, collect() { this.set(src.vmsLive()); } });
    new Gauge({ name: "voidbox_stages_waiting_for_vm", help: "Stages waiting for a node VM slot.", registers, collect() { this.set(src.stagesWaiting()); } });
    new Gauge({ name: "voidbox_runs_active", help: "Runs not yet terminal.", registers, collect() { this.set(src.activeRuns()); } });
    new Gauge({ name: "voidbox_draining", help: "1 while the daemon drains (accepts no new runs).", registers, collect() { this.set(src.draining() ? 1 : 0); } });
    new Gauge({
      name: "voidbox_state_dir_free_bytes",
      help: "Bytes available to the daemon on the state dir's filesystem.",
      registers,
      collect() {
        try {
          const s = fs.statfsSync(src.stateDir);
          this.set(s.bavail * s.bsize);
        } catch {
          this.set(Number.NaN); // unreadable: a gap, not a false 0
        }
      },
    });
  }

  runFinished(outcome: string): void {
    this.runs.inc({ outcome });
  }
  stageFinished(outcome: "succeeded" | "failed", durationMs: number): void {
    this.stageDuration.observe({ outcome }, durationMs / 1000);
  }
  vmBooted(bootMs: number, kind: "warm" | "cold"): void {
    this.vmBoot.observe({ kind }, bootMs / 1000);
  }
  warmPoolRequest(result: "hit" | "miss"): void {
    this.warmPool.inc({ result });
  }
  eventAppended(seconds: number): void {
    this.eventAppend.observe(seconds);
  }
  httpRequest(route: string, method: string, status: number): void {
    this.http.inc({ route, method, status: String(status) });
  }

  get contentType(): string {
    return this.registry.contentType;
  }
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
