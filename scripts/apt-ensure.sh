#!/usr/bin/env bash
# Usage: scripts/apt-ensure.sh WHAT PACKAGE...
# Installs the Debian packages that are missing (fast no-op when all are there: dpkg only, no network).
# Not root and something missing: prints the exact command to run and exits 1. WHAT names who needs them.
set -euo pipefail
what="$1"
shift
missing=()
for pkg in "$@"; do
  # `dpkg -s` also lists removed-but-configured packages, so check the status line, not just the exit code.
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
    missing+=("$pkg")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "writ: $what need: ${missing[*]}. Run as root:" >&2
  echo "  sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "writ: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no (or stale) package lists: update first, always.
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
