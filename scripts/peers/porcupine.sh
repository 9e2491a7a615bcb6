#!/usr/bin/env bash
# Builds bench/peers/porcupine/ (our harness around Porcupine v1.3.1, the
# peer of bench/peers/porcupine.ts; go.mod and go.sum pin it) into a cache
# outside the repository, and prints two lines on stdout: the binary's path
# and the Porcupine module's folder (its test_data/jepsen histories).
#
#   bash scripts/peers/porcupine.sh
set -euo pipefail
. "$(dirname "$0")/_go.sh"
go_env "Porcupine"
src="$(cd "$(dirname "$0")/../../bench/peers/porcupine" && pwd)"
bin="$(peers_cache)/porcupine-v1.3.1/porcupine-bench"
(cd "$src" && go build -o "$bin" . >&2)
echo "$bin"
(cd "$src" && go list -m -f '{{.Dir}}' github.com/anishathalye/porcupine)
