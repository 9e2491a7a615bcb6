#!/usr/bin/env bash
# Installs promtool (Prometheus' rule checker, from Debian's prometheus
# package) when it is missing, for tests/prompts/alerts_test.ts. Nothing is
# started: the package's service is not run (no systemd here), only
# /usr/bin/promtool is used. Progress goes to stderr.
set -euo pipefail
log() { echo "promtool: $*" >&2; }
if command -v promtool >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
  log "missing and neither root nor sudo is available: install Debian's prometheus package"; exit 1
fi
log "installing Debian's prometheus package for promtool (apt-get)"
install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >&2; }
if ! install; then
  log "apt-get install failed; refreshing the package lists once and retrying"
  "${SUDO[@]}" apt-get update >&2
  install
fi
command -v promtool >/dev/null
