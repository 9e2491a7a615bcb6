#!/usr/bin/env bash
# Builds Centrifugo v6.9.1 (the peer of bench/peers/centrifugo.ts) with
# `go install` into a cache outside the repository, once (several minutes
# on 2 cores), and prints the binary's path on stdout.
#
#   bash scripts/peers/centrifugo.sh   # -> ~/.cache/plexus/peers/centrifugo-v6.9.1/bin/centrifugo
set -euo pipefail
version="v6.9.1"
. "$(dirname "$0")/_go.sh"
bin="$(peers_cache)/centrifugo-$version/bin"
if [ ! -x "$bin/centrifugo" ]; then
  go_env "Centrifugo $version"
  echo "building Centrifugo $version (go install, first run only; minutes)" >&2
  GOBIN="$bin" go install "github.com/centrifugal/centrifugo/v6@$version" >&2
fi
echo "$bin/centrifugo"
