#!/usr/bin/env bash
# Usage: scripts/with-keyring.sh [--demo] CMD [ARGS...]
#
# Runs CMD inside a private D-Bus session with a throwaway, unlocked gnome-keyring Secret Service
# (see shared/recipes/keychain.md). Everything CMD stores in that keyring disappears when it ends.
#
# Process layout (why it is not a plain `exec dbus-run-session`):
#   outer bash (this PID, what the caller sees)
#     └─ env -u DISPLAY -u WAYLAND_DISPLAY dbus-run-session -- bash this-script   (background)
#          ├─ dbus-daemon
#          └─ inner bash
#               ├─ setsid gnome-keyring-daemon   (own session: Ctrl-C / SIGHUP never reach it)
#               └─ CMD                           (background + wait, stdin kept, in the terminal's group)
# Measured: dbus-run-session does not handle SIGTERM; it dies and leaves dbus-daemon and its child
# orphaned. So the outer bash stays alive, traps SIGINT/SIGTERM/SIGHUP and forwards them to CMD itself.
set -euo pipefail

# Absolute path of this script, for the re-run under dbus-run-session (plain bash: no tool needed yet).
case "${BASH_SOURCE[0]}" in
  /*) SELF="${BASH_SOURCE[0]}" ;;
  *) SELF="$PWD/${BASH_SOURCE[0]}" ;;
esac
MISSING_MSG="writ: the throwaway keyring needs gnome-keyring and dbus-user-session: run bash scripts/deps.sh"

# Waits for a background child and sets rc to its exit status. `wait` also returns early (status > 128)
# when a trapped signal arrives, so keep waiting until the child is really gone; a child already reaped
# by bash still reports its status to one more `wait`, while an unknown pid gives 127.
rc=0
wait_for() {
  while :; do
    wait "$1" && rc=0 || rc=$?
    if ! kill -0 "$1" 2>/dev/null; then break; fi
  done
  if [ "$rc" -gt 128 ]; then
    local again=0
    wait "$1" 2>/dev/null && again=0 || again=$?
    if [ "$again" -ne 127 ]; then rc=$again; fi
  fi
}

# ---------------------------------------------------------------------------------------------
# Inner half: runs inside the private bus (WRIT_KEYRING_CTL is set by the outer half).
# ---------------------------------------------------------------------------------------------
if [ -n "${WRIT_KEYRING_CTL:-}" ]; then
  ctl="$WRIT_KEYRING_CTL"
  tmp=""
  daemon_pid=""
  cmd_pid=""

  cleanup() {
    if [ -n "$daemon_pid" ]; then
      kill "$daemon_pid" 2>/dev/null || true
      # A stopped daemon (tests freeze it to make the keychain hang) would keep SIGTERM pending forever.
      kill -CONT "$daemon_pid" 2>/dev/null || true
      wait "$daemon_pid" 2>/dev/null || true
    fi
    if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
  }
  trap cleanup EXIT
  # SIGINT is ignored here (bash ignores it for background jobs and it cannot be un-ignored);
  # the outer half forwards signals to CMD directly. A TERM aimed at this shell goes to CMD too.
  # A terminal hangup reaches CMD directly (same process group): here it must only not kill us before
  # the cleanup. (':' rather than '' so CMD does not inherit an ignored SIGHUP.)
  forward() { if [ -n "$cmd_pid" ]; then kill -"$1" "$cmd_pid" 2>/dev/null || true; fi; }
  trap 'forward TERM' TERM
  trap ':' HUP

  # A fresh HOME and XDG_RUNTIME_DIR for the daemon only, so it never reads or writes a real keyring.
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/writ-keyring.XXXXXXXX")"
  chmod 700 "$tmp"
  mkdir -m 700 "$tmp/home" "$tmp/run"

  # Random password, held in a shell variable only: printf is a builtin (never in any argv) and the
  # process substitution is a pipe (never a file). It is never printed.
  password="$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  # The XDG_* base dirs are dropped too: if the caller set XDG_DATA_HOME, the daemon would otherwise
  # create its keyring inside the developer's real data directory.
  setsid env -u XDG_DATA_HOME -u XDG_CONFIG_HOME -u XDG_CACHE_HOME -u XDG_STATE_HOME \
    -u GNOME_KEYRING_CONTROL -u SSH_AUTH_SOCK \
    HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/run" \
    gnome-keyring-daemon --foreground --unlock --components=secrets \
    < <(printf '%s' "$password") >/dev/null 2>"$tmp/daemon.log" &
  daemon_pid=$!
  unset password

  ready=0
  for _ in $(seq 50); do # 50 x 0.1 s = 5 s
    if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; then
      ready=1
      break
    fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ "$ready" -ne 1 ]; then
    echo "writ: the throwaway gnome-keyring did not come up on the private D-Bus within 5 s" >&2
    sed 's/^/  gnome-keyring-daemon: /' "$tmp/daemon.log" >&2 || true
    exit 1
  fi

  # The command gets the caller's own HOME and XDG_RUNTIME_DIR (untouched above) and its DISPLAY back.
  cmd_env=(env --default-signal=INT,QUIT -u WRIT_KEYRING_CTL -u WRIT_KEYRING_HAD_DISPLAY -u WRIT_KEYRING_SAVED_DISPLAY WRIT_KEYRING=throwaway)
  if [ "${WRIT_KEYRING_HAD_DISPLAY:-0}" = 1 ]; then cmd_env+=("DISPLAY=${WRIT_KEYRING_SAVED_DISPLAY:-}"); fi
  # Background (so traps run while we wait) with stdin passed explicitly (bash would otherwise give a
  # background job /dev/null) and SIGINT/SIGQUIT back to default (bash ignores them for background jobs;
  # without job control the job stays in the terminal's foreground group, so it still reads the TTY and
  # gets Ctrl-C from it).
  "${cmd_env[@]}" "$@" <&0 &
  cmd_pid=$!
  echo "$cmd_pid" >"$ctl/pid"
  # A signal that reached the outer half before CMD existed.
  if [ -s "$ctl/pending" ]; then forward "$(cat "$ctl/pending")"; fi

  wait_for "$cmd_pid"
  exit "$rc"
fi

# ---------------------------------------------------------------------------------------------
# Outer half.
# ---------------------------------------------------------------------------------------------
demo=0
if [ "${1:-}" = "--demo" ]; then
  demo=1
  shift
fi
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/with-keyring.sh [--demo] CMD [ARGS...]" >&2
  exit 2
fi

for tool in gnome-keyring-daemon dbus-run-session dbus-send; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$MISSING_MSG" >&2
    exit 1
  fi
done

ctl=""

# Forward a signal to CMD. With a TTY, Ctrl-C (and a hangup) already delivered the signal to CMD (it is in
# the terminal's foreground process group), so INT and HUP are forwarded only when CMD is not in that
# group: never a double Ctrl-C. (The cost: a `kill -INT` aimed at this script alone, while CMD runs in
# the foreground of a terminal, is not passed on; SIGTERM always is.)
in_tty_foreground() {
  local stat rest
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  rest="${stat##*) }" # fields after "(comm) ": state ppid pgrp session tty_nr tpgid ...
  # shellcheck disable=SC2086
  set -- $rest
  [ "${3:-}" = "${6:-x}" ]
}
forward() {
  local sig="$1" pid=""
  if [ -z "$ctl" ]; then exit $((128 + $(kill -l "$sig"))); fi # nothing started yet
  if [ -s "$ctl/pid" ]; then pid="$(cat "$ctl/pid")"; fi
  if [ -z "$pid" ]; then
    echo "$sig" >"$ctl/pending"
    if [ -s "$ctl/pid" ]; then pid="$(cat "$ctl/pid")"; else return 0; fi
  fi
  if [ "$sig" != TERM ] && in_tty_foreground "$pid"; then return 0; fi
  kill -"$sig" "$pid" 2>/dev/null || true
}
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
trap 'if [ -n "$ctl" ]; then rm -rf "$ctl"; fi' EXIT
# Created only after the traps, so an early signal cannot leak it (umask keeps it private).
ctl="$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/writ-keyring-ctl.XXXXXXXX")"

if [ "$demo" -eq 1 ]; then
  # The demo's audit log goes with its key: checkpoints signed by a key that is gone could never be verified.
  if [ -z "${WRIT_STATE_DIR:-}" ]; then
    export WRIT_STATE_DIR="$ctl/state"
  fi
  echo "writ: demo mode: a private, throwaway keyring and audit log ($WRIT_STATE_DIR) that disappear when this command ends, with the signing key and every token it signed. For real use run \`writ serve\` in a desktop session with its own keychain." >&2
fi

had_display=0
if [ -n "${DISPLAY+x}" ]; then had_display=1; fi
# Without a display on the bus a locked keyring fails fast; with one, both keyring libraries hang
# forever on an invisible unlock prompt. So the bus, the daemon and the inner shell get no display.
WRIT_KEYRING_CTL="$ctl" WRIT_KEYRING_HAD_DISPLAY="$had_display" WRIT_KEYRING_SAVED_DISPLAY="${DISPLAY:-}" \
  env -u DISPLAY -u WAYLAND_DISPLAY dbus-run-session -- bash "$SELF" "$@" <&0 &
child=$!

wait_for "$child"
exit "$rc"
