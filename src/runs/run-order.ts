import { ApiError } from "../errors.js";
import { isSafeId } from "../ids.js";
import type { RunSummary } from "../store/summary.js";

/** Where a run sits in list order: oldest first, ties by id. */
export type OrderKey = Pick<RunSummary, "started_at" | "id">;

const compare = (a: OrderKey, b: OrderKey) => (a.started_at < b.started_at ? -1 : a.started_at > b.started_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * Every run's key, sorted: `GET /v1/runs` walks it, and a page cursor is the key of the
 * page's last run, so creates (which sort after every existing run, or at worst where
 * their start time puts them) never shift a page that was already handed out.
 */
export class RunOrder {
  private keys: OrderKey[] = [];

  /** Many keys at once (start-up): one sort. */
  load(keys: OrderKey[]): void {
    this.keys = [...this.keys, ...keys].sort(compare);
  }

  add(key: OrderKey): void {
    const last = this.keys[this.keys.length - 1];
    if (!last || compare(last, key) < 0) this.keys.push(key);
    else this.keys.splice(this.after(key), 0, key);
  }

  remove(id: string): void {
    const i = this.keys.findIndex((k) => k.id === id);
    if (i >= 0) this.keys.splice(i, 1);
  }

  /** Index of the first key after `key` (all of them when null). */
  after(key: OrderKey | null): number {
    if (!key) return 0;
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compare(this.keys[mid], key) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  at(i: number): OrderKey | undefined {
    return this.keys[i];
  }

  slice(): OrderKey[] {
    return this.keys.slice();
  }

  get length(): number {
    return this.keys.length;
  }
}

/** Opaque to clients: the last key of a page, base64url of its JSON. */
export function encodeCursor(key: OrderKey): string {
  return Buffer.from(JSON.stringify([key.started_at, key.id])).toString("base64url");
}

export function decodeCursor(cursor: string): OrderKey {
  const bad = () => new ApiError("INVALID_PARAMS", "query/cursor: not a cursor from a previous page");
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== "string" || typeof v[1] !== "string" || !isSafeId(v[1])) throw bad();
  return { started_at: v[0], id: v[1] };
}
