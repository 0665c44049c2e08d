// Waiting with a deadline: the one polling loop of the test kit (never a sleep as
// synchronisation: each wait names the condition it waits for and fails at its deadline).

/**
 * Polls `check` every 20 ms until it returns a truthy value (returned) or `timeoutMs`
 * passes (throws, naming `what`; a function is called then, for a message with the state
 * the wait saw).
 */
export async function waitFor<T>(check: () => T | Promise<T>, what: string | (() => string), timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(typeof what === "string" ? `timed out after ${timeoutMs} ms waiting for ${what}` : what());
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `p`, or a rejection naming `what` after `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
