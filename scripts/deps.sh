#!/usr/bin/env bash
# Installs the apt packages the tests need for a real (throwaway) Secret Service:
#   gnome-keyring      -> gnome-keyring-daemon, the Secret Service provider
#   dbus-user-session  -> dbus-run-session (and dbus-send, via dbus-bin)
# Idempotent: a fast no-op (dpkg -s only, no network) when everything is already there.
# (libsecret-tools, for `secret-tool` while debugging, is optional and not installed here.)
# Then runs scripts/e2e-tools.sh (code-server, Node 24, playwright-core, chromium for the end-to-end tests in a
# real VS Code; cached in .e2e-tools/), unless WRIT_SKIP_E2E=1.
set -euo pipefail

PACKAGES=(gnome-keyring dbus-user-session)

missing=()
for pkg in "${PACKAGES[@]}"; do
  # `dpkg -s` also lists removed-but-configured packages, so check the status line, not just the exit code.
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"

  if [ "$(id -u)" -ne 0 ]; then
    echo "writ: missing packages: ${missing[*]}. Run as root:" >&2
    echo "  sudo sh -c '$cmd'" >&2
    exit 1
  fi

  echo "writ: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ "${WRIT_SKIP_E2E:-0}" != 1 ]; then
  bash "$(dirname "$0")/e2e-tools.sh"
fi
