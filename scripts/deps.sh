#!/usr/bin/env bash
# Installs the apt packages the tests need for a real (throwaway) Secret Service:
#   gnome-keyring      -> gnome-keyring-daemon, the Secret Service provider
#   dbus-user-session  -> dbus-run-session (and dbus-send, via dbus-bin)
# Idempotent: a fast no-op (dpkg -s only, no network) when everything is already there.
# (libsecret-tools, for `secret-tool` while debugging, is optional and not installed here.)
# Then runs scripts/e2e-tools.sh (code-server, Node 24, playwright-core, chromium for the end-to-end tests in a
# real VS Code; cached in .e2e-tools/), unless WRIT_SKIP_E2E=1.
set -euo pipefail

bash "$(dirname "$0")/apt-ensure.sh" "the keyring tests" gnome-keyring dbus-user-session

if [ "${WRIT_SKIP_E2E:-0}" != 1 ]; then
  bash "$(dirname "$0")/e2e-tools.sh"
fi
