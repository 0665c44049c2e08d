#!/usr/bin/env bash
# The minimal guest kernel (guest/build-kernel.sh), built once per machine with a
# progress line, in the foreground or in the background.
#
#   bash guest/kernel.sh <outdir>                build it now (or wait for the build running)
#   bash guest/kernel.sh <outdir> --background   start the build detached (nice'd) and return
#   bash guest/kernel.sh <outdir> --check        exit 0 when <outdir> holds the kernel of the current inputs
#   bash guest/kernel.sh <outdir> --status       one line: up to date | building | failed | not built
#
# One build at a time (flock on <outdir>.lock): a second caller waits for the first and
# shows its progress. The background build logs to <outdir>.log.
#
# Progress: kbuild's objects are counted as they appear in the build tree, against the
# count of a full build of guest/kernel.config (KERNEL_OBJECTS below; a build records
# its own count in <outdir>.objects for the next one). build-kernel.sh itself stays as
# it is: its text is part of the cached kernel's stamp.
set -euo pipefail

OUT=${1:?usage: kernel.sh <outdir> [--background|--check|--status]}
MODE=${2:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(mkdir -p "$(dirname "$OUT")" && cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
LOCK=$OUT.lock
WORKROOT=$OUT.work
LOG=$OUT.log
# Objects (*.o) in the tree of a full build of guest/kernel.config on linux-source-6.1,
# host tools included (measured).
KERNEL_OBJECTS=780

# The stamp build-kernel.sh writes for the current inputs (same formula as there).
current_stamp() {
  local ver
  ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || return 1
  command -v gcc >/dev/null 2>&1 || return 1
  {
    echo "source=linux-source-6.1 $ver"
    echo "cc=$(gcc --version | head -n 1)"
    cat "$HERE/kernel.config" "$HERE/build-kernel.sh"
  } | sha256sum | cut -d' ' -f1
}
up_to_date() {
  local s
  s=$(current_stamp) || return 1
  [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$s" ] && [ -f "$OUT/vmlinux" ] && [ -s "$OUT/kernel-version" ] && [ -f "$OUT/microvm-options" ]
}
failed_before() {
  local s
  s=$(current_stamp) || return 1
  [ -f "$OUT.failed" ] && [ "$(cat "$OUT.failed")" = "$s" ]
}
running() { # true while another process holds the build lock
  [ -e "$LOCK" ] || return 1
  ! flock -n "$LOCK" true 2>/dev/null
}

case "$MODE" in
  --check) up_to_date; exit ;;
  --status)
    if up_to_date; then echo "up to date"
    elif running; then echo "building"
    elif failed_before; then echo "failed"
    else echo "not built"; fi
    exit 0 ;;
  --background)
    if running; then echo "guest/kernel.sh: the minimal guest kernel is already building (log: $LOG)"; exit 0; fi
    # setsid + nohup: the build outlives `make run`; nice: micro-VMs booting meanwhile come first.
    setsid nohup nice -n 19 bash "${BASH_SOURCE[0]}" "$OUT" </dev/null >"$LOG" 2>&1 &
    echo "guest/kernel.sh: building the minimal guest kernel in the background (pid $!, log: $LOG)"
    exit 0 ;;
  "") ;;
  *) echo "usage: kernel.sh <outdir> [--background|--check|--status]" >&2; exit 2 ;;
esac

# --- progress ----------------------------------------------------------------------------
TTY=0; [ -t 1 ] && TTY=1
last_shown=""
show() { # show "<text>": a rewritten line on a terminal, else a line per change of text
  if [ $TTY = 1 ]; then printf '\r\033[K%s' "$1"
  elif [ "$1" != "$last_shown" ]; then echo "$1"; fi
  last_shown=$1
}
estimate() { cat "$OUT.objects" 2>/dev/null || echo "$KERNEL_OBJECTS"; }
max_seen=0
LINE=""
progress() { # sets LINE (no subshell: max_seen must survive)
  local tree n est pct
  LINE=""
  [ -d "$WORKROOT" ] || return 0 # not started, or finished
  tree=$(ls -d "$WORKROOT"/vbx-kernel.*/*/ 2>/dev/null | head -n 1 || true)
  if [ -z "$tree" ]; then LINE="guest kernel [step 1/3] preparing (build dependencies, linux-source-6.1)"; return; fi
  if [ ! -x "$tree/scripts/kconfig/conf" ]; then LINE="guest kernel [step 1/3] unpacking linux-source-6.1"; return; fi
  if [ ! -f "$tree/.config" ] || [ ! -d "$tree/include/generated" ]; then LINE="guest kernel [step 2/3] configuring (tinyconfig + guest/kernel.config)"; return; fi
  # find fails when files vanish under it (kbuild's temporaries): a count is all we need,
  # and under `set -e` a failure here would end the watcher and its EXIT trap would delete
  # the tree being built.
  n=$(find "$tree" -name '*.o' 2>/dev/null | wc -l || true)
  [ "$n" -gt "$max_seen" ] && max_seen=$n
  est=$(estimate)
  pct=$(( n * 100 / est )); [ $pct -gt 99 ] && pct=99
  if [ $TTY = 1 ]; then LINE="guest kernel [step 3/3] compiling: ${pct}% (${n} of ~${est} objects)"
  else LINE="guest kernel [step 3/3] compiling: $(( pct / 10 * 10 ))%"; fi # logs, CI: a line per 10 %
}
watch() { # watch <pid>: progress until it exits
  while kill -0 "$1" 2>/dev/null; do
    progress || true # progress is only shown: it must never stop the build
    [ -z "$LINE" ] || show "$LINE"
    sleep 2
  done
  [ $TTY = 1 ] && printf '\r\033[K'
  return 0
}

# Kconfig reports each choice our fragment switches (e.g. HZ_100 over tinyconfig's HZ
# default) as ".config:N:warning: override: HZ_100 changes choice state": that is the
# fragment doing its job, so such lines go to the log only. Anything else is shown.
filter_expected() {
  local line sym
  while IFS= read -r line; do
    if [[ $line =~ ^\.config:[0-9]+:warning:\ override:\ ([A-Z0-9_]+)\ changes\ choice\ state$ ]]; then
      sym=${BASH_REMATCH[1]}
      if grep -qx "CONFIG_$sym=y" "$HERE/kernel.config"; then echo "$line" >> "$OUT.notes"; continue; fi
    fi
    [ $TTY = 1 ] && printf '\r\033[K'
    echo "$line"
  done
}

# --- build (or wait for the one running) -------------------------------------------------
exec 9>"$LOCK"
if ! flock -n 9; then
  echo "guest/kernel.sh: the minimal guest kernel is being built by another process (log: $LOG); waiting for it"
  flock 9 &
  waiter=$!
  watch $waiter
  wait $waiter
  if up_to_date; then echo "guest/kernel.sh: custom kernel $(cat "$OUT/kernel-version") ready"; exit 0; fi
  echo "guest/kernel.sh: that build did not produce a kernel (see $LOG)" >&2
  exit 1
fi

if up_to_date; then
  echo "guest/kernel.sh: custom kernel up to date ($OUT, $(cat "$OUT/kernel-version"))"
  exit 0
fi
rm -rf "$WORKROOT" "$OUT.notes"
mkdir -p "$WORKROOT"
trap 'rm -rf "$WORKROOT"' EXIT
t0=$(date +%s)
rc_file=$WORKROOT.rc
rm -f "$rc_file"
( TMPDIR=$WORKROOT bash "$HERE/build-kernel.sh" "$OUT" 2>&1; echo $? > "$rc_file" ) | filter_expected &
builder=$!
watch $builder
wait $builder || true
rc=$(cat "$rc_file" 2>/dev/null || echo 1)
rm -f "$rc_file"
if [ "$rc" = 0 ] && up_to_date; then
  # This build's own object count sizes the next progress bar.
  [ "$max_seen" -gt 100 ] && echo "$max_seen" > "$OUT.objects"
  echo "guest/kernel.sh: done in $(( $(date +%s) - t0 )) s"
  exit 0
fi
exit 1
