#!/usr/bin/env bash
# Installs every peer of bench/peers/ (first run only; the Go builds take
# minutes), so `deno task bench:peers` times benchmarks, not builds.
set -euo pipefail
here="$(dirname "$0")"
for peer in moleculer fastify porcupine nats-server centrifugo; do
  bash "$here/$peer.sh" >/dev/null
done
echo "peers installed" >&2
