import type { SessionMessage, SessionStore } from "../../store/sessions.js";
import type { Handler } from "../handler.js";

export function sessionHandlers(sessions: SessionStore, now: () => number) {
  const listSessionMessages: Handler<"listSessionMessages"> = ({ params }) => ({ json: sessions.list(params.session_id) });

  const appendSessionMessage: Handler<"appendSessionMessage"> = ({ params, body }) => {
    const msg: SessionMessage = { ts_ms: now(), role: body.role, content: body.content };
    sessions.append(params.session_id, msg);
    return { json: msg };
  };

  return { listSessionMessages, appendSessionMessage };
}
