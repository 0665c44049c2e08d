/** Exit codes of the CLI (documented in README.md and USAGE). */
export const EXIT = {
  ok: 0,
  /** The run failed or was cancelled, the spec is invalid, or the daemon refused the request. */
  failed: 1,
  /** Bad command line. */
  usage: 2,
  /** No daemon answered at the address. */
  unreachable: 3,
  /** Ctrl-C on `voidbox run` (128 + SIGINT). */
  interrupted: 130,
} as const;

/** A bad command line: exits 2 with the message and a pointer to `--help`. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}
