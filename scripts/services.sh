#!/usr/bin/env bash
# Installs (when missing) and starts the services integration tests use, on
# loopback, idempotently. Downloads and builds are cached outside the repo in
# $PLEXUS_CACHE (default ~/.cache/plexus); running state lives in
# $PLEXUS_RUN (default /tmp/plexus-services). Progress goes to stderr; stdout
# is only the `export VAR=...` lines, so `eval "$(deno task services)"` works.
#
# Services: denokv (self-hosted Deno KV, `cargo install denokv`).
# Redis and Kafka join this script with the transport work.
set -euo pipefail

CACHE=${PLEXUS_CACHE:-$HOME/.cache/plexus}
RUN=${PLEXUS_RUN:-/tmp/plexus-services}
DENOKV_VERSION=0.14.0
DENOKV_PORT=${PLEXUS_DENOKV_PORT:-4512}
mkdir -p "$CACHE" "$RUN"

log() { echo "services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.1
  done
  log "$name did not open port $port; its log: $RUN/$name.log"
  tail -n 20 "$RUN/$name.log" >&2 || true
  return 1
}

# --- denokv -----------------------------------------------------------------
DENOKV_BIN="$CACHE/denokv-$DENOKV_VERSION/bin/denokv"
if [ ! -x "$DENOKV_BIN" ]; then
  command -v cargo >/dev/null || { log "cargo is needed to build denokv (rustup or Debian's cargo)"; exit 1; }
  log "building denokv $DENOKV_VERSION with cargo (first run only; several minutes on 2 cores)"
  cargo install denokv --version "$DENOKV_VERSION" --locked --root "$CACHE/denokv-$DENOKV_VERSION" >&2
fi
TOKEN_FILE="$RUN/denokv.token"
[ -s "$TOKEN_FILE" ] || head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$TOKEN_FILE"
DENOKV_TOKEN=$(cat "$TOKEN_FILE")
if port_open "$DENOKV_PORT"; then
  log "denokv already listening on 127.0.0.1:$DENOKV_PORT"
else
  log "starting denokv on 127.0.0.1:$DENOKV_PORT"
  nohup "$DENOKV_BIN" --sqlite-path "$RUN/denokv.sqlite" serve \
    --addr "127.0.0.1:$DENOKV_PORT" --access-token "$DENOKV_TOKEN" \
    >"$RUN/denokv.log" 2>&1 &
  echo $! >"$RUN/denokv.pid"
  wait_port "$DENOKV_PORT" denokv
fi

echo "export DENO_KV_URL=http://127.0.0.1:$DENOKV_PORT DENO_KV_ACCESS_TOKEN=$DENOKV_TOKEN"
