/** One Server-Sent Events message (https://html.spec.whatwg.org/multipage/server-sent-events.html). */
export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/**
 * Parses an SSE byte stream into messages. Comment lines (heartbeats) are skipped; a
 * message without a `data:` line is not dispatched (the standard's rule). `onActivity`
 * runs on every chunk, heartbeats included, so a caller can time out a silent stream.
 */
export async function* parseSse(body: AsyncIterable<Uint8Array>, onActivity: () => void = () => {}): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  let buf = "";
  let id: string | null = null;
  let event = "";
  let data: string[] = [];
  let hasData = false;
  for await (const chunk of body) {
    onActivity();
    buf += decoder.decode(chunk, { stream: true });
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
      if (!m || (m[0] === "\r" && m.index === buf.length - 1)) break;
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      if (line === "") {
        if (hasData) yield { id, event: event || "message", data: data.join("\n") };
        event = "";
        data = [];
        hasData = false;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") {
        data.push(value);
        hasData = true;
      } else if (field === "event") event = value;
      else if (field === "id" && !value.includes("\0")) id = value;
    }
  }
}
