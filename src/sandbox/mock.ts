import { createHash } from "node:crypto";
import { posix } from "node:path";
import { AGENT_PROGRAM, MOCK_AGENT_ENV, OUTPUT_FILE_ENV } from "./agent.js";
import type { MockAgentSpec } from "../spec/types.js";
import { WORKSPACE, workspaceRelative } from "./workspace.js";
import { FileTooBigError, capOutput, type ExecCommand, type ExecResult, type Sandbox, type StageVm, type StageVmOptions, type VmExit } from "./types.js";

export interface MockSandboxOptions {
  /**
   * Bytes all files of the virtual /workspace may hold together. The workspace lives
   * in the daemon's memory, so it is bounded like a guest's tmpfs: past it a write
   * fails with "No space left on device". Absent: unbounded.
   */
  maxWorkspaceBytes?: number;
}

/**
 * The mock sandbox: a deterministic simulation of a few programs over a per-run
 * virtual /workspace. Nothing executes on the host. One instance belongs to one run,
 * so its workspace is that run's. Output is bounded like the real sandbox's
 * (ExecCommand.maxOutputBytes) and so is the workspace (maxWorkspaceBytes).
 */
export class MockSandbox implements Sandbox {
  readonly kind = "mock" as const;
  /** Absolute guest path → content. */
  readonly files = new Map<string, Buffer>();
  /** Bytes in `files` (kept as writes happen: a spec with many writes must not rescan the workspace each time). */
  usedBytes = 0;
  readonly maxWorkspaceBytes: number;
  constructor(opts: MockSandboxOptions = {}) {
    this.maxWorkspaceBytes = opts.maxWorkspaceBytes ?? Infinity;
  }

  async open(_opts: StageVmOptions): Promise<StageVm> {
    return new MockStage(this);
  }
}

const enc = (s: string) => Buffer.from(s, "utf8");
const ok = (stdout = ""): Outcome => ({ code: 0, out: stdout, err: "" });
const fail = (code: number, err: string): Outcome => ({ code, out: "", err });

interface Outcome {
  code: number;
  out: string | Buffer;
  err: string;
  /** Bytes the command wrote in all, when more than `out` holds. */
  outTotal?: number;
}

/** Collects a stream up to `max` bytes and counts the rest; `live` sees each kept write as it happens. */
class Sink {
  private readonly parts: Buffer[] = [];
  private kept = 0;
  total = 0;
  constructor(
    private readonly max: number,
    private readonly live?: (data: Buffer) => void,
  ) {}
  add(data: string | Buffer, total = typeof data === "string" ? Buffer.byteLength(data) : data.length): void {
    this.total += total;
    if (this.kept >= this.max) return;
    const b = typeof data === "string" ? enc(data) : data;
    const take = b.subarray(0, Math.min(b.length, this.max - this.kept));
    if (take.length === 0) return;
    this.parts.push(Buffer.from(take));
    this.kept += take.length;
    this.live?.(take);
  }
  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
  get text(): string {
    return this.bytes.toString("utf8");
  }
}

const ENOSPC = "No space left on device";

function resolvePath(p: string): string {
  return posix.resolve(WORKSPACE, p);
}

class MockStage implements StageVm {
  private stopped = false;
  /** Bytes of output one command may produce: more could go nowhere (stdout is capped, files are bounded). */
  private produceMax = Infinity;
  private readonly files: Map<string, Buffer>;
  constructor(private readonly ws: MockSandbox) {
    this.files = ws.files;
  }

  async exec(cmd: ExecCommand): Promise<ExecResult> {
    const outMax = cmd.maxOutputBytes ?? Infinity;
    this.produceMax = Math.max(outMax === Infinity ? 0 : outMax, this.ws.maxWorkspaceBytes);
    // Live output: a script's writes as its commands run; any other program's output at its end (the engine sends what was not delivered live).
    const r = await this.run(cmd.program, cmd.args, cmd.stdin, cmd.signal, cmd.env, outMax, cmd.onOutput);
    const out = capOutput(Buffer.isBuffer(r.out) ? r.out : enc(r.out), cmd.maxOutputBytes, r.outTotal);
    const err = capOutput(enc(r.err), cmd.maxOutputBytes);
    return { exitCode: r.code, stdout: out.kept, stderr: err.kept, stdoutBytes: out.total, stderrBytes: err.total };
  }

  async readFile(relPath: string, maxBytes: number): Promise<Buffer | null> {
    const rel = workspaceRelative(relPath);
    if (rel === null || posix.isAbsolute(relPath)) throw new Error(`unsafe path ${relPath}`);
    const b = this.files.get(resolvePath(rel));
    if (b && b.length > maxBytes) throw new FileTooBigError(relPath, b.length, maxBytes);
    return b ?? null;
  }

  async stop(): Promise<VmExit> {
    this.stopped = true;
    return { exitCode: 0, signal: null, killed: false };
  }

  private async run(
    program: string,
    args: string[],
    stdin: Buffer,
    signal: AbortSignal,
    env: Record<string, string> = {},
    outMax = Infinity,
    live?: ExecCommand["onOutput"],
  ): Promise<Outcome> {
    if (this.stopped) return fail(137, "mock sandbox: stage already stopped\n");
    const name = posix.basename(program);
    switch (name) {
      case "echo": {
        const noNewline = args[0] === "-n";
        const words = noNewline ? args.slice(1) : args;
        return ok(words.join(" ") + (noNewline ? "" : "\n"));
      }
      case "true":
        return ok();
      case "false":
        return fail(1, "");
      case "cat": {
        if (!args.length) return { code: 0, out: stdin, err: "" };
        // Never materialise more than can be kept: `cat f f f ...` of a big file stays bounded.
        const sink = new Sink(this.produceMax);
        for (const a of args) {
          const b = a === "-" ? stdin : this.files.get(resolvePath(a));
          if (!b) return { code: 1, out: sink.bytes, outTotal: sink.total, err: `cat: ${a}: No such file or directory\n` };
          sink.add(b);
        }
        return { code: 0, out: sink.bytes, outTotal: sink.total, err: "" };
      }
      case "tr":
        return tr(args, stdin);
      case "test":
      case "[": {
        const a = name === "[" ? args.slice(0, -1) : args;
        if (a.length === 2 && (a[0] === "-e" || a[0] === "-f")) return this.files.has(resolvePath(a[1])) ? ok() : fail(1, "");
        if (a.length === 2 && a[0] === "-d") return resolvePath(a[1]) === WORKSPACE ? ok() : fail(1, "");
        return fail(2, `test: unsupported expression in mock sandbox: ${a.join(" ")}\n`);
      }
      case "sleep": {
        const secs = Number(args[0]);
        if (!Number.isFinite(secs) || secs < 0) return fail(1, `sleep: invalid time interval '${args[0] ?? ""}'\n`);
        return (await sleep(secs * 1000, signal)) ? ok() : fail(143, "sleep: terminated\n");
      }
      case "sha256sum": {
        if (!args.length) return ok(`${sha256(stdin)}  -\n`);
        let out = "";
        for (const a of args) {
          const b = this.files.get(resolvePath(a));
          if (!b) return fail(1, `sha256sum: ${a}: No such file or directory\n`);
          out += `${sha256(b)}  ${a}\n`;
        }
        return ok(out);
      }
      case "sh":
      case "bash": {
        const i = args.findIndex((a) => a === "-c" || a === "-lc");
        if (i < 0 || args[i + 1] === undefined) return fail(2, `${name}: mock sandbox only simulates '${name} -c SCRIPT'\n`);
        return this.script(args[i + 1], stdin, signal, outMax, live);
      }
      case AGENT_PROGRAM:
        return this.agent(args, env);
      default:
        return fail(127, `mock sandbox: program '${program}' is not simulated (exit 127)\n`);
    }
  }

  /** A tiny shell: lines and `;`/`&&` lists of simple commands, `> FILE` / `>> FILE`, heredocs into files, `exit N`. */
  private async script(src: string, stdin: Buffer, signal: AbortSignal, outMax: number, live?: ExecCommand["onOutput"]): Promise<Outcome> {
    const lines = src.split("\n");
    const out = new Sink(outMax, live && ((d) => live("stdout", d)));
    const errSink = new Sink(outMax, live && ((d) => live("stderr", d)));
    const done = (c: number, more = ""): Outcome => {
      errSink.add(more);
      return { code: c, out: out.bytes, outTotal: out.total, err: errSink.text };
    };
    let code = 0;
    // The script's stdin is one stream: the first command that reads it consumes it.
    let input = stdin;
    for (let li = 0; li < lines.length; li++) {
      const line = lines[li].trim();
      if (!line || line.startsWith("#")) continue;
      const heredoc = /^cat\s*(>>?)\s*(\S+)\s*<<-?\s*['"]?(\w+)['"]?\s*$/.exec(line);
      if (heredoc) {
        const [, op, target, marker] = heredoc;
        const body: string[] = [];
        while (++li < lines.length && lines[li].trim() !== marker) body.push(lines[li]);
        if (li >= lines.length) return done(2, `sh: here-document delimited by end-of-file (wanted '${marker}')\n`);
        code = this.writeFile(target, enc(body.join("\n") + "\n"), op === ">>") ? 0 : 1;
        if (code) errSink.add(`sh: write error: ${ENOSPC}\n`);
        continue;
      }
      for (const list of splitTop(line, ";")) {
        const chain = splitTop(list, "&&");
        for (const simple of chain) {
          const words = tokenize(simple);
          if (!words) return done(2, `sh: syntax error: unterminated quote\n`);
          if (!words.length) continue;
          if (words[0] === "exit") return done(Number(words[1] ?? code) & 0xff);
          const { argv, redirect } = extractRedirect(words);
          const r = await this.run(argv[0], argv.slice(1), input, signal, {}, this.produceMax);
          if (readsStdin(argv[0], argv.slice(1))) input = Buffer.alloc(0);
          code = r.code;
          errSink.add(r.err);
          const data = Buffer.isBuffer(r.out) ? r.out : enc(r.out);
          if (!redirect) out.add(data, r.outTotal);
          else if ((r.outTotal ?? data.length) > data.length || !this.writeFile(redirect.file, data, redirect.append)) {
            code = 1;
            errSink.add(`sh: write error: ${ENOSPC}\n`);
          }
          if (code !== 0) break;
        }
      }
    }
    return done(code);
  }

  /**
   * The simulated agent: its answer is `[mock] <prompt>`. It writes its result file
   * ($VOIDBOX_OUTPUT_FILE, default result.json) and
   * artifacts only when the box's `mock:` block asks for them (a string result_json
   * is written as is, so malformed output can be simulated).
   */
  private agent(args: string[], env: Record<string, string>): Outcome {
    const i = args.indexOf("--print");
    const prompt = i >= 0 ? (args[i + 1] ?? "") : args.join(" ");
    const mock = env[MOCK_AGENT_ENV] ? (JSON.parse(env[MOCK_AGENT_ENV]) as MockAgentSpec) : {};
    if (mock.result_json !== undefined)
      this.writeFile(env[OUTPUT_FILE_ENV] ?? "result.json", enc(typeof mock.result_json === "string" ? mock.result_json : JSON.stringify(mock.result_json)), false);
    for (const [name, content] of Object.entries(mock.artifacts ?? {})) this.writeFile(name, enc(content), false);
    return { code: mock.exit_code ?? 0, out: `[mock] ${prompt}\n`, err: "" };
  }

  /** Like a write to a full tmpfs: what does not fit is not written and the write fails. */
  private writeFile(p: string, data: Buffer, append: boolean): boolean {
    const key = resolvePath(p);
    const old = this.files.get(key);
    const prev = append ? old : undefined;
    const others = this.ws.usedBytes - (old?.length ?? 0);
    const room = this.ws.maxWorkspaceBytes - others - (prev?.length ?? 0);
    const fits = data.length <= room;
    const written = fits ? data : Buffer.from(data.subarray(0, Math.max(0, room)));
    const next = prev ? Buffer.concat([prev, written]) : written;
    this.files.set(key, next);
    this.ws.usedBytes = others + next.length;
    return fits;
  }
}

/** Whether a simulated program consumes its stdin. */
function readsStdin(program: string, args: string[]): boolean {
  switch (posix.basename(program)) {
    case "cat":
      return !args.length || args.includes("-");
    case "sha256sum":
      return !args.length;
    case "tr":
    case "sh":
    case "bash":
      return true;
    default:
      return false;
  }
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function expandSet(s: string): string[] {
  const out: string[] = [];
  const chars = [...s];
  for (let i = 0; i < chars.length; i++) {
    if (chars[i + 1] === "-" && chars[i + 2] !== undefined) {
      for (let c = chars[i].codePointAt(0)!; c <= chars[i + 2].codePointAt(0)!; c++) out.push(String.fromCodePoint(c));
      i += 2;
    } else out.push(chars[i]);
  }
  return out;
}

function tr(args: string[], stdin: Buffer): Outcome {
  if (args.length !== 2) return fail(1, "tr: mock sandbox supports 'tr SET1 SET2'\n");
  const from = expandSet(args[0]);
  const to = expandSet(args[1]);
  if (!to.length) return fail(1, "tr: SET2 is empty\n");
  const map = new Map(from.map((c, i) => [c, to[Math.min(i, to.length - 1)]]));
  return ok([...stdin.toString("utf8")].map((c) => map.get(c) ?? c).join(""));
}

/** Split on a separator outside quotes. */
function splitTop(s: string, sep: string): string[] {
  const parts: string[] = [];
  let quote = "";
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = "";
    } else if (c === "'" || c === '"') quote = c;
    else if (s.startsWith(sep, i)) {
      parts.push(cur);
      cur = "";
      i += sep.length - 1;
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter(Boolean);
}

/** Shell words with single/double quotes and backslash escapes; null on an unterminated quote. */
function tokenize(s: string): string[] | null {
  const words: string[] = [];
  let cur: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "'" || c === '"') {
      const end = s.indexOf(c, i + 1);
      if (end < 0) return null;
      cur = (cur ?? "") + s.slice(i + 1, end).replace(c === '"' ? /\\(["\\$`])/g : /$^/, "$1");
      i = end;
    } else if (c === "\\" && i + 1 < s.length) {
      cur = (cur ?? "") + s[++i];
    } else if (c === " " || c === "\t") {
      if (cur !== null) words.push(cur);
      cur = null;
    } else if (c === ">" && cur === null) {
      // keep `>`/`>>` as their own words so redirections parse uniformly
      const op = s[i + 1] === ">" ? ">>" : ">";
      words.push(op);
      i += op.length - 1;
    } else cur = (cur ?? "") + c;
  }
  if (cur !== null) words.push(cur);
  return words;
}

function extractRedirect(words: string[]): { argv: string[]; redirect?: { file: string; append: boolean } } {
  const i = words.findIndex((w) => w === ">" || w === ">>");
  if (i < 0 || words[i + 1] === undefined) return { argv: words };
  return { argv: [...words.slice(0, i), ...words.slice(i + 2)], redirect: { file: words[i + 1], append: words[i] === ">>" } };
}
