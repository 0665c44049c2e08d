/**
 * A model provider on loopback for agent tests and benches: Anthropic Messages
 * (`POST …/v1/messages`) and OpenAI chat completions (`POST …/chat/completions`). The
 * model name picks the behaviour: `error-<status>` replies that HTTP status with an
 * error body, `slow-<ms>` waits that long first; anything else answers at once (after
 * `delayMs`, for benches). Every request is recorded (path, headers, parsed body).
 * With `tls` it serves HTTPS (selfSignedCert makes a certificate for an address).
 */
import http from "node:http";
import https from "node:https";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { AddressInfo } from "node:net";

interface FakeRequest {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: { model?: string; messages?: { role: string; content: string }[]; system?: string; max_tokens?: number };
}

export interface FakeProvider {
  url: string;
  port: number;
  requests: FakeRequest[];
  /** Token counts every successful reply reports. */
  usage: { input: number; output: number };
  close(): Promise<void>;
}

/** The answer text for a prompt (what the tests expect back). */
export const fakeAnswer = (kind: "anthropic" | "openai", prompt: string) => `fake ${kind} answer to: ${prompt}`;

export async function startFakeProvider(o: { key?: string; delayMs?: number; usage?: { input: number; output: number }; tls?: { key: string; cert: string } } = {}): Promise<FakeProvider> {
  const requests: FakeRequest[] = [];
  const usage = o.usage ?? { input: 1200, output: 345 };
  const timers = new Set<NodeJS.Timeout>();
  const handler: http.RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body: FakeRequest["body"] = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as FakeRequest["body"];
      } catch {
        body = {};
      }
      const path = req.url ?? "";
      requests.push({ path, headers: req.headers, body });
      const kind = path.endsWith("/v1/messages") ? "anthropic" : path.endsWith("/chat/completions") ? "openai" : null;
      const send = (status: number, obj: unknown) => {
        if (res.destroyed) return;
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      if (!kind) return send(404, { error: { message: `no route ${path}` } });
      const given = kind === "anthropic" ? req.headers["x-api-key"] : String(req.headers.authorization ?? "").replace(/^Bearer /, "");
      if (o.key !== undefined && given !== o.key) return send(401, { error: { type: "authentication_error", message: "invalid x-api-key" } });
      const model = body.model ?? "";
      const err = /^error-(\d{3})$/.exec(model);
      if (err) return send(Number(err[1]), { error: { type: "api_error", message: `fake provider failure ${err[1]}` } });
      const slow = /^slow-(\d+)$/.exec(model);
      const wait = slow ? Number(slow[1]) : (o.delayMs ?? 0);
      const prompt = body.messages?.filter((m) => m.role === "user").map((m) => m.content).join("\n") ?? "";
      const text = fakeAnswer(kind, prompt);
      const reply = () =>
        kind === "anthropic"
          ? send(200, { id: "msg_fake", type: "message", role: "assistant", model, content: [{ type: "text", text }], stop_reason: "end_turn", usage: { input_tokens: usage.input, output_tokens: usage.output } })
          : send(200, { id: "chatcmpl-fake", object: "chat.completion", model, choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }], usage: { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output } });
      if (!wait) return reply();
      const t = setTimeout(() => {
        timers.delete(t);
        reply();
      }, wait);
      timers.add(t);
    });
  };
  const server = o.tls ? https.createServer({ key: o.tls.key, cert: o.tls.cert }, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${o.tls ? "https" : "http"}://127.0.0.1:${port}`,
    port,
    requests,
    usage,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A self-signed certificate (its own CA) for an IP address, made with the openssl CLI; null without openssl. */
export function selfSignedCert(ip: string, dir: string): { key: string; cert: string } | null {
  const key = path.join(dir, "tls.key");
  const cert = path.join(dir, "tls.crt");
  const r = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", `/CN=${ip}`, "-addext", `subjectAltName=IP:${ip}`, "-keyout", key, "-out", cert], { stdio: "ignore", timeout: 20_000 });
  if (r.status !== 0) return null;
  return { key: fs.readFileSync(key, "utf8"), cert: fs.readFileSync(cert, "utf8") };
}
