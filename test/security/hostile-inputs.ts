// Hostile inputs, shared by test/security/hostile.test.ts (each family once, with its
// expected answer) and bench/hostile.ts (families mixed and mutated into ≥ 10,000
// requests). Paths assume a run `known` with a stage `main` exists.
import zlib from "node:zlib";
import { prng } from "../helpers/prng.js";

const MiB = 1024 * 1024;

// Raw path segments (already percent-encoded where needed).
export const HOSTILE_IDS = [
  "..",
  ".",
  "..%2F..%2Fetc%2Fpasswd",
  "..%2F..%2F..%2F..%2Fescaped",
  "%2E%2E%2F%2E%2E%2Fescaped",
  "%2e%2e",
  "a%2Fb",
  "a%5Cb",
  "..%5C..%5Cescaped",
  ".hidden",
  "-dash",
  "a..b",
  "a".repeat(200),
  "a".repeat(129),
  "%00",
  "a%00b",
  "x%0Ay",
  "a%20b",
  "%C3%A9t%C3%A9",
  "%FF",
  "%",
  "%zz",
  "a%",
  "%C0%AF",
  "%E2%82",
  "~root",
  "$(id)",
];

// Route templates with one hostile slot each ({X}); the other ids are valid.
export const ID_ROUTES: Array<{ method: string; path: string; body?: unknown }> = [
  { method: "GET", path: "/v1/runs/{X}" },
  { method: "GET", path: "/v1/runs/{X}?api_version=v2" },
  { method: "GET", path: "/v1/runs/{X}/events" },
  { method: "POST", path: "/v1/runs/{X}/cancel", body: { reason: "x" } },
  { method: "POST", path: "/v1/runs/{X}/cancel" },
  { method: "GET", path: "/v1/runs/{X}/stages" },
  { method: "GET", path: "/v1/runs/{X}/stages/main/output-file" },
  { method: "GET", path: "/v1/runs/known/stages/{X}/output-file" },
  { method: "GET", path: "/v1/runs/{X}/stages/main/artifacts/a.txt" },
  { method: "GET", path: "/v1/runs/known/stages/{X}/artifacts/a.txt" },
  { method: "GET", path: "/v1/runs/known/stages/main/artifacts/{X}" },
  { method: "GET", path: "/v1/sessions/{X}/messages" },
  { method: "POST", path: "/v1/sessions/{X}/messages", body: { role: "user", content: "pwned" } },
];

/** run_id values in a create body (decoded strings, not path segments). */
export const HOSTILE_RUN_IDS = ["..", "../../escaped", "a/b", ".hidden", "a".repeat(200), "a\u0000b", "\ud800", "x\ny", "a\\b"];

/** Malformed percent-encoding in query strings: ignored or a 4xx, never a 5xx. */
export const HOSTILE_QUERIES = [
  "/v1/runs?state=%FF",
  "/v1/runs?api_version=%",
  "/v1/runs/known/events?from_event_id=%FF",
  "/v1/runs/known?api_version=%E2%82",
  "/v1/runs/known/events?from_event_id=..%2F..%2Fetc%2Fpasswd",
];

/** [what, body, path]: JSON nested `depth` levels deep in each body. */
export function nestedJsonCases(depth: number): Array<[string, string, string]> {
  return [
    ["nested arrays as the body", "[".repeat(depth) + "]".repeat(depth), "/v1/runs"],
    ["unclosed arrays", "[".repeat(depth), "/v1/runs"],
    ["nested arrays in file", `{"file":${"[".repeat(depth)}${"]".repeat(depth)}}`, "/v1/runs"],
    ["nested objects in file", `{"file":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`, "/v1/runs"],
    ["nested arrays in policy", `{"file":"x.yaml","policy":{"max_stage_retries":${"[".repeat(depth)}${"]".repeat(depth)}}}`, "/v1/runs"],
    ["nested arrays in cancel reason", `{"reason":${"[".repeat(depth)}${"]".repeat(depth)}}`, "/v1/runs/known/cancel"],
    ["nested arrays in session content", `{"role":"user","content":${"[".repeat(depth)}${"]".repeat(depth)}}`, "/v1/sessions/s1/messages"],
  ];
}

export type BodyCase = [what: string, path: string, body: Buffer | string, headers: Record<string, string>];

/** Invalid UTF-8, non-JSON content types and encodings, non-object bodies. `bombMiB` sizes the gzip bomb. */
export function encodingCases(goodSpec: string, bombMiB = 64): BodyCase[] {
  return [
    ["invalid UTF-8 in create", "/v1/runs", Buffer.concat([Buffer.from('{"file":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]), { "content-type": "application/json" }],
    ["overlong UTF-8 in create", "/v1/runs", Buffer.concat([Buffer.from('{"file":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), { "content-type": "application/json" }],
    ["invalid UTF-8 in cancel", "/v1/runs/known/cancel", Buffer.from([0x7b, 0xff, 0x7d]), { "content-type": "application/json" }],
    ["invalid UTF-8 in session", "/v1/sessions/s1/messages", Buffer.concat([Buffer.from('{"role":"user","content":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), { "content-type": "application/json" }],
    ["text/plain prose", "/v1/runs", "please run examples/hello.yaml", { "content-type": "text/plain" }],
    ["form-urlencoded create", "/v1/runs", `file=${encodeURIComponent(goodSpec)}&run_id=form-run`, { "content-type": "application/x-www-form-urlencoded" }],
    ["form-urlencoded cancel", "/v1/runs/known/cancel", "reason=because", { "content-type": "application/x-www-form-urlencoded" }],
    ["form-urlencoded session", "/v1/sessions/s1/messages", "role=user&content=hi", { "content-type": "application/x-www-form-urlencoded" }],
    ["multipart create", "/v1/runs", `--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n${goodSpec}\r\n--b--\r\n`, { "content-type": "multipart/form-data; boundary=b" }],
    ["malformed JSON", "/v1/runs", '{"file": "x.yaml",', { "content-type": "application/json" }],
    ["malformed JSON in cancel", "/v1/runs/known/cancel", "{reason: nope}", { "content-type": "application/json" }],
    ["JSON null", "/v1/runs", "null", { "content-type": "application/json" }],
    ["JSON array", "/v1/runs", "[]", { "content-type": "application/json" }],
    ["JSON string", "/v1/runs", '"examples/hello.yaml"', { "content-type": "application/json" }],
    ["JSON number", "/v1/runs", "1e308", { "content-type": "application/json" }],
    ["file of wrong type", "/v1/runs", '{"file": 42}', { "content-type": "application/json" }],
    ["empty file", "/v1/runs", '{"file": ""}', { "content-type": "application/json" }],
    ["empty body on create", "/v1/runs", "", { "content-type": "application/json" }],
    ["session with __proto__ role", "/v1/sessions/s1/messages", '{"__proto__":{"role":"user","content":"x"}}', { "content-type": "application/json" }],
    ["cancel with a JSON string", "/v1/runs/known/cancel", '"because"', { "content-type": "application/json" }],
    ["UTF-16 body", "/v1/runs", Buffer.from(`{"file":"${goodSpec}"}`, "utf16le"), { "content-type": "application/json; charset=utf-16" }],
    ["gzip content-encoding", "/v1/runs", Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00]), { "content-type": "application/json", "content-encoding": "gzip" }],
    ["unknown content-encoding", "/v1/runs", `{"file":"${goodSpec}"}`, { "content-type": "application/json", "content-encoding": "br2" }],
    ["truncated deflate stream", "/v1/runs", zlib.deflateSync(Buffer.from(`{"file":"${goodSpec}"}`)).subarray(0, 6), { "content-type": "application/json", "content-encoding": "deflate" }],
    ["gzip bytes labelled deflate", "/v1/runs", zlib.gzipSync(Buffer.from(`{"file":"${goodSpec}"}`)), { "content-type": "application/json", "content-encoding": "deflate" }],
    [`gzip bomb (${bombMiB} MiB of zeros)`, "/v1/runs", zlib.gzipSync(Buffer.alloc(bombMiB * MiB)), { "content-type": "application/json", "content-encoding": "gzip" }],
  ];
}

export const POLICY_FIELDS = ["max_parallel_microvms_per_run", "max_stage_retries", "stage_timeout_secs", "cancel_grace_period_secs"];
export const POLICY_VALUES: unknown[] = [1e308, -1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1.5, 0.0001, "4", "", null, true, {}, [], [1], -1e308, 1e20];

/** [what, raw bytes sent on a fresh connection]. */
export const PROTOCOL_CASES: Array<[string, string]> = [
  ["garbage request line", "HELLO THERE\r\n\r\n"],
  ["oversized header", `GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\nConnection: close\r\n\r\n`],
  ["bad content-length", "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n{}"],
  ["conflicting content-length and chunked", "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"],
];

// --- generated requests (the bench) ----------------------------------------------------

/** One generated request: an HTTP request, or raw bytes on a fresh connection. */
export type HostileRequest =
  | { kind: "http"; family: string; method: string; path: string; body?: Buffer | string; headers: Record<string, string> }
  | { kind: "raw"; family: string; payload: string };

const JSON_CT = { "content-type": "application/json" };
const ID_PIECES = ["..", ".", "%2F", "%2E", "%5C", "%00", "%0A", "%20", "%FF", "%C0%AF", "%E2%82", "%", "a", "Z", "9", "-", "_", "~", "$", "(", "'", "é", "%C3%A9", "\u202e"];
const ODD_STRINGS = ["", " ", "\u0000", "\ud800", "\uffff", "\u202e", "../../etc/passwd", "/etc/shadow", "/dev/zero", "/proc/self/environ", "%s%n", "${HOME}", "$(id)", "`id`", "<script>", "'; DROP TABLE runs; --"];
const CONTENT_TYPES = ["application/json", "application/json; charset=latin1", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml", "*/*", "", "application/json; boundary=\u0000"];

/**
 * `count` hostile requests mixed from the families above plus random mutations:
 * hostile ids in every route, hostile values in every body field, truncated and
 * bit-flipped bodies, odd content types and encodings, nested JSON, garbage request
 * lines. Deterministic for a seed. `goodSpec` is a valid spec file (some requests
 * are valid creates with one field broken).
 */
export function* generateHostile(goodSpec: string, count: number, seed = 1): Generator<HostileRequest> {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const randomId = () => Array.from({ length: int(1, 12) }, () => pick(ID_PIECES)).join("");
  const oddValue = (): unknown => {
    switch (int(0, 6)) {
      case 0:
        return pick(POLICY_VALUES);
      case 1:
        return pick(ODD_STRINGS);
      case 2:
        return "x".repeat(int(0, 3) === 0 ? 1024 * 1024 + 1 : int(1, 5000));
      case 3: {
        const depth = int(1, 200);
        return JSON.parse("[".repeat(depth) + "]".repeat(depth)) as unknown;
      }
      case 4:
        return { __proto__: { polluted: true }, constructor: { prototype: { polluted: true } } };
      case 5:
        return [randomId(), rnd(), null];
      default:
        return int(-1e9, 1e9) * (rnd() < 0.5 ? 1 : 1e300);
    }
  };
  const posts: Array<{ path: string; body: () => Record<string, unknown> }> = [
    { path: "/v1/runs", body: () => ({ file: goodSpec, run_id: `gen-${int(0, 1e9)}`, policy: { stage_timeout_secs: 60 } }) },
    { path: "/v1/runs/known/cancel", body: () => ({ reason: "bench" }) },
    { path: "/v1/sessions/s1/messages", body: () => ({ role: "user", content: "hello" }) },
  ];
  const encodings = encodingCases(goodSpec, 1);
  const nested = nestedJsonCases(5000);

  for (let n = 0; n < count; n++) {
    const family = int(0, 9);
    if (family === 0) {
      const r = pick(ID_ROUTES);
      const id = rnd() < 0.5 ? pick(HOSTILE_IDS) : randomId();
      const body = r.body === undefined ? undefined : JSON.stringify(r.body);
      yield { kind: "http", family: "hostile id", method: r.method, path: r.path.replace("{X}", id), body, headers: body ? JSON_CT : {} };
    } else if (family === 1) {
      const id = rnd() < 0.5 ? pick(HOSTILE_RUN_IDS) : decodeURIComponentSafe(randomId());
      yield { kind: "http", family: "create run_id", method: "POST", path: "/v1/runs", body: JSON.stringify({ file: goodSpec, run_id: id }), headers: JSON_CT };
    } else if (family === 2) {
      const base = pick(["/v1/runs", "/v1/runs/known", "/v1/runs/known/events", "/v1/runs/known/stages", "/v1/health", "/v1/sessions/s1/messages"]);
      const q = rnd() < 0.3 ? pick(HOSTILE_QUERIES) : `${base}?${pick(["state", "api_version", "from_event_id", "x", "", "%"])}=${randomId()}${rnd() < 0.3 ? `&${randomId()}` : ""}`;
      yield { kind: "http", family: "query", method: "GET", path: q, headers: {} };
    } else if (family === 3) {
      const [, path, body, headers] = pick(encodings);
      yield { kind: "http", family: "encoding", method: "POST", path, body, headers };
    } else if (family === 4) {
      const policy: Record<string, unknown> = { [pick(POLICY_FIELDS)]: oddValue() };
      if (rnd() < 0.2) policy[randomId()] = 1;
      yield { kind: "http", family: "policy", method: "POST", path: "/v1/runs", body: JSON.stringify({ file: goodSpec, policy }), headers: JSON_CT };
    } else if (family === 5) {
      const p = pick(posts);
      const body = p.body();
      const keys = Object.keys(body);
      const key = rnd() < 0.8 ? pick(keys) : randomId();
      body[key] = oddValue();
      yield { kind: "http", family: "field value", method: "POST", path: p.path, body: JSON.stringify(body), headers: JSON_CT };
    } else if (family === 6) {
      const p = pick(posts);
      const text = Buffer.from(JSON.stringify(p.body()));
      let b: Buffer;
      if (rnd() < 0.5) b = text.subarray(0, int(0, text.length - 1));
      else {
        b = Buffer.from(text);
        for (let i = int(1, 4); i > 0; i--) b[int(0, b.length - 1)] = int(0, 255);
      }
      yield { kind: "http", family: "mangled body", method: "POST", path: p.path, body: b, headers: { "content-type": pick(CONTENT_TYPES) || "application/json" } };
    } else if (family === 7) {
      const [, body, path] = pick(nested);
      yield { kind: "http", family: "nested JSON", method: "POST", path, body, headers: JSON_CT };
    } else if (family === 8) {
      const method = pick(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]);
      const path = pick(["/v1/runs", "/v1/runs/known", "/v1/health", "/v1/nope", "/", "/v1/runs/known/cancel", "/v1/sessions/s1/messages", `/v1/${randomId()}`]);
      const ct = pick(CONTENT_TYPES);
      yield { kind: "http", family: "method", method, path, body: method === "GET" || method === "HEAD" ? undefined : "{}", headers: ct ? { "content-type": ct } : {} };
    } else {
      const payload =
        rnd() < 0.3
          ? pick(PROTOCOL_CASES)[1]
          : `${pick(["GET", "POST", "G\u0000T", "", "GET GET", "\u00ff"])} ${pick(["/v1/health", "*", "/../../etc/passwd", "http://x/v1/health", "/v1/runs\u0000", ""])} ${pick(["HTTP/1.1", "HTTP/9.9", "HTTP/1", "", "HTTP/1.1 extra"])}\r\n${pick(["Host: x\r\n", "", "Host: x\r\nHost: y\r\n", "Content-Length: -1\r\n", "Content-Length: 99999999999999999999\r\n", "Transfer-Encoding: gzip, chunked\r\n", " folded: header\r\n", "X: \u0000\r\n"])}Connection: close\r\n\r\n`;
      yield { kind: "raw", family: "request line", payload };
    }
  }
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
