#!/usr/bin/env bash
# Builds nats-server v2.15.3 (the peer of bench/peers/jetstream.ts; Debian's
# is 2.9) with `go install` into a cache outside the repository, once, and
# prints the binary's path on stdout.
#
#   bash scripts/peers/nats-server.sh   # -> ~/.cache/plexus/peers/nats-server-v2.15.3/bin/nats-server
set -euo pipefail
version="v2.15.3"
. "$(dirname "$0")/_go.sh"
bin="$(peers_cache)/nats-server-$version/bin"
if [ ! -x "$bin/nats-server" ]; then
  go_env "nats-server $version"
  echo "building nats-server $version (go install, first run only)" >&2
  GOBIN="$bin" go install "github.com/nats-io/nats-server/v2@$version" >&2
fi
echo "$bin/nats-server"
