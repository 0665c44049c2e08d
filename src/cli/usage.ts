import { DEFAULT_LIMITS, SERVE_LIMIT_FLAGS } from "../limits.js";

function showDefault(v: number, kind: "bytes" | "count" | "count0" | "ms" | "mib" | "secs"): string {
  if (v === -1) return "auto";
  if (kind === "ms") return `${v} ms`;
  if (kind === "secs") return `${v / 1000} s`;
  if (kind === "mib") return `${v} MiB`;
  if (kind === "count" || kind === "count0") return String(v);
  for (const [unit, size] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) if (v >= size && v % size === 0) return `${v / size}${unit}`;
  return String(v);
}

const DAEMON_FLAGS = `  --daemon URL        the daemon: unix:///PATH or http://HOST:PORT (default: $VOIDBOX_DAEMON_URL, else the
                      Unix socket $XDG_RUNTIME_DIR/voidbox.sock, …)
  --token-file FILE   bearer token for a TCP daemon (default: $VOIDBOX_DAEMON_TOKEN_FILE, $VOIDBOX_DAEMON_TOKEN,
                      else ~/.config/voidbox/daemon-token)`;

const EXIT_CODES = `exit codes: 0 ok · 1 the run failed (or the request was refused, or the spec is invalid) ·
            2 usage error · 3 daemon unreachable · 130 interrupted (voidbox run)`;

/** Help per command (`voidbox COMMAND --help`). */
export const COMMAND_HELP: Record<string, string> = {
  serve: `usage: voidbox serve [--listen URL]... [--state-dir DIR] [--no-auth] [--token-file FILE]
                     [--accel auto|kvm|tcg] [--kernel FILE --initramfs FILE] [--log-level LEVEL]
                     [--log-format json|pretty] [--spec-root DIR]... [--mount-root DIR]...
                     [--provider-secrets FILE] [LIMIT FLAGS]
run the daemon.
  --listen URL        tcp://HOST:PORT or unix:///PATH, repeatable (default: the Unix socket
                      $XDG_RUNTIME_DIR/voidbox.sock, else $TMPDIR/voidbox-UID.sock, else /tmp/voidbox-UID.sock);
                      unix:// paths are at most 107 bytes
  --state-dir DIR     runs, events and artifacts (default: $VOIDBOX_STATE_DIR, else ~/.local/state/void-box);
                      one daemon per state dir: a second one exits 2 naming the holder's pid and URLs
  --no-auth           TCP listeners accept requests without a token (loopback addresses only)
  --token-file FILE   the token TCP clients must send (default: created at ~/.config/voidbox/daemon-token)
  --log-level LEVEL   trace, debug, info (default), warn, error
  --log-format FMT    json (default: one pino JSON object per line) or pretty (for a terminal)
  --spec-root DIR     POST /v1/runs {file} may only name files under DIR (repeatable; default: anywhere)
  --mount-root DIR    sandbox.mounts may share directories under DIR with guests (repeatable; default: none,
                      and a spec with mounts is refused)
  --provider-secrets FILE  agent providers' API keys as NAME=value lines (mode 0600), read when a stage
                      starts and looked up before the daemon's environment; a key goes only into its
                      agent's guest process, never to the state dir, events or logs
SIGTERM/SIGINT: active runs fail (daemon_shutdown) and the daemon exits; SIGUSR2 (or voidbox drain):
no new runs, active ones finish (at most --drain-timeout), then exit 0
limits (sizes take KiB/MiB/GiB suffixes):
${Object.entries(SERVE_LIMIT_FLAGS)
  .map(([flag, f]) => `  --${flag.padEnd(20)} ${f.help} (default ${showDefault(DEFAULT_LIMITS[f.key], f.kind)})`)
  .join("\n")}`,
  run: `usage: voidbox run FILE [--run-id ID] [--json] [--cancel-on-interrupt] [--daemon URL] [--token-file FILE]
start a run of the spec FILE and show its events live until it ends.
  --run-id ID             idempotent start: an active run with this id is followed, a terminal one is refused
  --json                  print each event as one JSON line, and nothing else
  --cancel-on-interrupt   on Ctrl-C, cancel the run (by default it keeps running in the daemon)
${DAEMON_FLAGS}
exit code: 0 when the run succeeded, 1 when it failed or was cancelled.`,
  validate: `usage: voidbox validate FILE
check a run spec (schema and plan) without creating a run; no daemon needed.
exit code: 0 valid, 1 invalid (the message names the field).`,
  status: `usage: voidbox status RUN_ID [--daemon URL] [--token-file FILE]
print the run's state (JSON).
${DAEMON_FLAGS}`,
  events: `usage: voidbox events RUN_ID [--follow] [--v2] [--json] [--daemon URL] [--token-file FILE]
print the run's events.
  --follow   keep printing new events until the run ends
  --v2       v2 (PascalCase) event names
  --json     one JSON object per line
${DAEMON_FLAGS}`,
  cancel: `usage: voidbox cancel RUN_ID [--reason TEXT] [--daemon URL] [--token-file FILE]
cancel an active run (idempotent).
${DAEMON_FLAGS}`,
  list: `usage: voidbox list [--state active|terminal] [--json] [--daemon URL] [--token-file FILE]
list runs as a table, oldest first.
  --state S   only active or only terminal runs
  --json      the runs as JSON
${DAEMON_FLAGS}`,
  image: `usage: voidbox image build NAME --packages a,b,... [--suite S] [--mirror URL] [--state-dir DIR] [--json]
       voidbox image build [NAME] --file images/FILE.yaml [--state-dir DIR] [--json]
       voidbox image import NAME --oci LAYOUT[:TAG] [--state-dir DIR] [--json]
       voidbox image list [--json] [--state-dir DIR]
       voidbox image rm NAME [--state-dir DIR]
guest images for sandbox.image: a Debian root filesystem (mmdebstrap: the essential packages plus
--packages, from --suite, default bookworm) packed read-only (erofs) under DIR/images, named by a
hash of its inputs: a build of the same inputs reuses the image. Building needs root, mmdebstrap
and erofs-utils. import: an OCI image layout (umoci unpack; TAG default latest; keyed by the image
manifest's digest; it must hold /bin/sh). --state-dir: the daemon's (default: $VOIDBOX_STATE_DIR, else ~/.local/state/void-box).`,
  health: `usage: voidbox health [--daemon URL] [--token-file FILE]
print the daemon's health (JSON).
${DAEMON_FLAGS}`,
  drain: `usage: voidbox drain [--daemon URL] [--token-file FILE]
drain the daemon: it takes no new runs, lets the active ones finish (at most its
--drain-timeout), then exits 0. Prints the drain's state (JSON).
${DAEMON_FLAGS}`,
};

export const USAGE = `voidbox — run workflows, pipelines and agents in QEMU micro-VMs

usage: voidbox COMMAND [ARGS]   (voidbox COMMAND --help for its options)

commands:
  serve              run the daemon
  run FILE           start a run and show its events live until it ends
  validate FILE      check a run spec without creating a run
  status RUN_ID      a run's state
  events RUN_ID      a run's events (--follow: live)
  cancel RUN_ID      cancel a run
  list               runs as a table (--state active|terminal)
  health             the daemon's health
  drain              stop taking runs, let active ones finish, then exit
  image build|import|list|rm  guest images for sandbox.image (Debian packages, read-only)
  --version          the CLI's version

${EXIT_CODES}
`;
