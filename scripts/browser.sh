#!/usr/bin/env bash
# Installs Debian's chromium and firefox-esr for the console's browser tests
# (tests/console/browser_test.ts) when they are missing; prints the export
# lines naming them. Only apt: no browser build of its own is downloaded.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]} (apt)" >&2
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
fi
echo "export PLEXUS_CHROMIUM=$(command -v chromium)"
echo "export PLEXUS_FIREFOX=$(command -v firefox-esr)"
