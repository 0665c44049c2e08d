import { randomBytes } from "node:crypto";
import { v7 as uuidv7 } from "uuid";
import { componentPattern } from "./openapi-document.js";

/**
 * Ids used as path segments or file names: openapi.yaml's `SafeId`. HTTP validation
 * checks it on requests; this guards the code paths that do not go through it (spec
 * files, stage names, artifact names, files found on disk).
 */
const SAFE_ID = componentPattern("SafeId");

export function isSafeId(s: unknown): s is string {
  return typeof s === "string" && SAFE_ID().test(s);
}

export interface IdSource {
  runId(): string;
  eventId(): string;
}

/**
 * Run ids: a millisecond timestamp plus 64 random bits, so two creates in the same
 * millisecond never collide (a defect of the Rust daemon), and a process-local counter
 * as a tie-breaker that makes a collision impossible within one daemon.
 */
export function defaultIds(now: () => number = Date.now): IdSource {
  let counter = 0;
  return {
    runId() {
      counter = (counter + 1) % 0x10000;
      return `run-${now()}-${counter.toString(16).padStart(4, "0")}${randomBytes(6).toString("hex")}`;
    },
    eventId: () => uuidv7(),
  };
}
