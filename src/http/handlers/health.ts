import type { components } from "../../../generated/api.js";
import type { Handler } from "../handler.js";

export type Health = components["schemas"]["Health"];

export function healthHandlers(health: () => Health) {
  const getHealth: Handler<"getHealth"> = () => ({ json: health() });
  return { getHealth };
}
