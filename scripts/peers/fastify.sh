#!/usr/bin/env bash
# Installs Fastify 5.12.8 (the peer of bench/peers/fastify.ts) from npm into
# a cache outside the repository, once, and prints the folder on stdout
# (bench/peers/fastify/server.mjs runs from it with the machine's node).
#
#   bash scripts/peers/fastify.sh   # -> ~/.cache/plexus/peers/fastify-5.12.8
set -euo pipefail
version="5.12.8"
. "$(dirname "$0")/_go.sh"
dir="$(peers_cache)/fastify-$version"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "scripts/peers/fastify.sh: Node.js and npm are needed on PATH" >&2
  exit 2
fi
if [ ! -f "$dir/node_modules/fastify/package.json" ]; then
  mkdir -p "$dir"
  echo '{"name":"plexus-peer-fastify","private":true}' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "fastify@$version" >&2
fi
echo "$dir"
