#!/usr/bin/env bash
# Installs Moleculer (the peer of bench/peers/moleculer.ts) from npm into a
# cache outside the repository, once, and prints its folder on stdout.
#
#   bash scripts/peers/moleculer.sh            # -> ~/.cache/plexus/peers/moleculer-0.15.2
#
# Needs node and npm on PATH. PLEXUS_PEERS_CACHE moves the cache.
set -euo pipefail
version="0.15.2"
cache="${PLEXUS_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plexus/peers}"
dir="$cache/moleculer-$version"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "scripts/peers/moleculer.sh: node and npm are needed on PATH to install Moleculer" >&2
  exit 2
fi
if [ ! -f "$dir/node_modules/moleculer/package.json" ]; then
  mkdir -p "$dir"
  echo '{"name":"plexus-peer-moleculer","private":true}' >"$dir/package.json"
  # Moleculer 0.15 declares node >= 22; the TCP transporter and JSON
  # serializer it is benchmarked with run on the node found here too.
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    --engine-strict=false "moleculer@$version" >&2
fi
echo "$dir"
