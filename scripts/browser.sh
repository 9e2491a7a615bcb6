#!/usr/bin/env bash
# Installs Debian's chromium for the console's browser test
# (tests/console/browser_test.ts) when it is missing; prints the export line
# naming it. Only apt: no browser build of its own is downloaded.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (apt)" >&2
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
  else
    echo "chromium is missing and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
fi
echo "export PLEXUS_CHROMIUM=$(command -v chromium)"
