/**
 * The least of QMP (QEMU's JSON monitor protocol) the daemon needs: connect to a VM's
 * `-qmp unix:PATH,server=on,wait=off` socket, negotiate, run commands one at a time.
 * Every wait is bounded; errors name the command.
 */
import net from "node:net";

type Reply = { return?: unknown; error?: { class?: string; desc?: string }; QMP?: unknown; event?: string };

export class Qmp {
  private buf = "";
  private waiting: Array<(r: Reply | Error) => void> = [];
  private dead: Error | null = null;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        let msg: Reply;
        try {
          msg = JSON.parse(line) as Reply;
        } catch {
          continue;
        }
        if (msg.event) continue; // asynchronous events: not waited for here
        this.waiting.shift()?.(msg);
      }
    });
    const gone = (e: Error) => {
      this.dead ??= e;
      for (const w of this.waiting.splice(0)) w(this.dead);
    };
    sock.on("error", gone);
    sock.on("close", () => gone(new Error("QMP connection closed")));
  }

  /** Connects and leaves command mode negotiated (greeting read, qmp_capabilities sent). */
  static async connect(path: string, timeoutMs: number): Promise<Qmp> {
    const sock = net.connect(path);
    const qmp = new Qmp(sock);
    try {
      await qmp.next(timeoutMs, "greeting"); // the greeting comes unasked
      await qmp.execute("qmp_capabilities", undefined, timeoutMs);
      return qmp;
    } catch (e) {
      sock.destroy();
      throw e;
    }
  }

  private next(timeoutMs: number, what: string): Promise<Reply> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = this.waiting.filter((w) => w !== done);
        reject(new Error(`QMP ${what}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (r: Reply | Error) => {
        clearTimeout(t);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      this.waiting.push(done);
    });
  }

  async execute(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    const reply = this.next(timeoutMs, command);
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
    const r = await reply;
    if (r.error) throw new Error(`QMP ${command}: ${r.error.desc ?? r.error.class ?? "error"}`);
    return r.return;
  }

  close(): void {
    this.sock.destroy();
  }
}
