# Shared by the Go peers' install scripts (sourced): the Go module cache the
# services script uses (modules come through the Go module proxy), and a
# check that Go is on PATH.
go_env() {
  if ! command -v go >/dev/null; then
    echo "scripts/peers: Go (1.22 or newer) is needed on PATH to build $1" >&2
    exit 2
  fi
  local root="${PLEXUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plexus}"
  export GOPATH="$root/go" GOMODCACHE="$root/go/mod" GOFLAGS=-modcacherw GOTOOLCHAIN=local
}
peers_cache() {
  echo "${PLEXUS_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plexus/peers}"
}
