#!/usr/bin/env bash
# Installs (when missing) and starts the services integration tests use, on
# loopback, idempotently. Downloads and builds are cached outside the repo in
# $PLEXUS_CACHE (default ~/.cache/plexus); running state lives in
# $PLEXUS_RUN (default /tmp/plexus-services). Progress goes to stderr; stdout
# is only the `export VAR=...` lines, so `eval "$(deno task services)"` works.
#
# Services:
#   denokv  self-hosted Deno KV (`cargo install denokv`), 127.0.0.1:4512
#   redis   Debian's redis-server (apt-get when missing), our own instance on
#           127.0.0.1:${PLEXUS_REDIS_PORT:-6390}; the system service is never used
#   kafka   Apache Kafka (KRaft, one combined broker+controller node) from the
#           org.apache.kafka:kafka_2.13 jars fetched with Maven
#           (scripts/kafka-pom.xml), Java 17; 127.0.0.1:${PLEXUS_KAFKA_PORT:-9092};
#           waits up to ${PLEXUS_KAFKA_START_S:-240} s for it to start
#   nats    Debian's nats-server (apt-get when missing) with JetStream, our own
#           instance on 127.0.0.1:${PLEXUS_NATS_PORT:-4222}, store in $PLEXUS_RUN/nats;
#           plus the `nats` CLI (natscli, `go install` into the cache) when Go
#           is there, for the interop tests
#   rabbitmq Debian's rabbitmq-server (apt-get when missing), our own node
#           (plexus@localhost) on 127.0.0.1:${PLEXUS_AMQP_PORT:-5672} with its
#           config, store and logs in $PLEXUS_RUN/rabbitmq, its own epmd on
#           127.0.0.1:${PLEXUS_AMQP_EPMD_PORT:-4370}, distribution on the AMQP
#           port + 20000 (loopback), the management plugin on
#           ${PLEXUS_AMQP_MGMT_PORT:-15672} for rabbitmqadmin; the system node is
#           never used. rabbitmqctl/rabbitmqadmin wrappers bound to our node are
#           in $PLEXUS_RUN/rabbitmq/bin (exported as PLEXUS_RABBITMQCTL and
#           PLEXUS_RABBITMQADMIN)
#   promtool Debian's prometheus package (apt-get when missing; scripts/promtool.sh),
#           for `promtool check rules`; nothing is started
#
# Stopping everything: kill "$(cat $PLEXUS_RUN/<name>.pid)" for denokv, redis,
# kafka, nats, rabbitmq. Running this script again restarts whatever is not listening.
# Every service runs in a session of its own (setsid): whoever ran this
# script may end its process group (a closed terminal, a CI step, a job
# runner killing a finished command's group) and the services stay up.
set -euo pipefail

CACHE=${PLEXUS_CACHE:-$HOME/.cache/plexus}
RUN=${PLEXUS_RUN:-/tmp/plexus-services}
DENOKV_VERSION=0.14.0
DENOKV_PORT=${PLEXUS_DENOKV_PORT:-4512}
REDIS_PORT=${PLEXUS_REDIS_PORT:-6390}
KAFKA_VERSION=4.1.1 # Java 17+, KRaft only (no ZooKeeper)
KAFKA_PORT=${PLEXUS_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${PLEXUS_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${PLEXUS_KAFKA_HEAP:--Xms256m -Xmx512m}
NATS_PORT=${PLEXUS_NATS_PORT:-4222}
NATSCLI_VERSION=v0.5.0
AMQP_PORT=${PLEXUS_AMQP_PORT:-5672}
AMQP_MGMT_PORT=${PLEXUS_AMQP_MGMT_PORT:-15672}
AMQP_EPMD_PORT=${PLEXUS_AMQP_EPMD_PORT:-4370}
AMQP_DIST_PORT=$((AMQP_PORT + 20000))
HERE=$(cd "$(dirname "$0")" && pwd)
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
  setsid nohup "$DENOKV_BIN" --sqlite-path "$RUN/denokv.sqlite" serve \
    --addr "127.0.0.1:$DENOKV_PORT" --access-token "$DENOKV_TOKEN" \
    >"$RUN/denokv.log" 2>&1 &
  echo $! >"$RUN/denokv.pid"
  wait_port "$DENOKV_PORT" denokv
fi

# --- redis ------------------------------------------------------------------
redis_ping() {
  if command -v redis-cli >/dev/null; then
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
  else
    local reply
    { exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || reply=
    exec 3<&- 3>&-
    [ "${reply%$'\r'}" = "+PONG" ]
  fi
}

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
    log "redis-server is missing and neither root nor sudo is available: install Debian's redis-server"; exit 1
  fi
  log "installing Debian's redis-server (apt-get)"
  apt_install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; }
  if ! apt_install; then
    log "apt-get install failed; refreshing the package lists once and retrying"
    "${SUDO[@]}" apt-get update >&2
    apt_install
  fi
fi

if redis_ping; then
  log "redis already answering on 127.0.0.1:$REDIS_PORT"
elif port_open "$REDIS_PORT"; then
  log "port $REDIS_PORT is taken by something that is not Redis (set PLEXUS_REDIS_PORT)"; exit 1
else
  log "starting redis $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/') on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$RUN/redis"
  # No RDB snapshots; an append-only file instead, so the "broker restarted
  # during a run" tests keep every acknowledged entry. appendfsync everysec
  # (the default) is enough for that: Redis write()s the AOF before it replies,
  # so a killed redis-server loses nothing (only a kernel crash could).
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --save "" --appendonly yes --appendfsync everysec --dir "$RUN/redis" \
    --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" \
    </dev/null >&2
  ok=
  for _ in $(seq 1 100); do
    if redis_ping; then ok=1; break; fi
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    log "redis did not answer PING on port $REDIS_PORT; its log: $RUN/redis.log"
    tail -n 20 "$RUN/redis.log" >&2 || true
    exit 1
  fi
fi

# --- kafka ------------------------------------------------------------------
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
if [ ! -e "$KAFKA_LIBS/.complete" ]; then
  command -v java >/dev/null || { log "java (17+) is needed for Kafka (Debian: openjdk-17-jre-headless)"; exit 1; }
  command -v mvn >/dev/null || { log "mvn is needed to fetch Kafka's jars (Debian: maven)"; exit 1; }
  log "fetching kafka_2.13 $KAFKA_VERSION and its dependencies with Maven (first run only)"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -B -q -Dstyle.color=never -f "$HERE/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >&2
  # Quiet logging for the command-line tools (a WARN-level log4j2.properties
  # on the classpath); the broker is given its own configuration file.
  mkdir -p "$KAFKA_LIBS.tmp/.conf"
  cat >"$KAFKA_LIBS.tmp/.conf/log4j2.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
  (cd "$KAFKA_LIBS.tmp/.conf" && jar cf ../plexus-tools-log4j2.jar log4j2.properties)
  rm -rf "$KAFKA_LIBS.tmp/.conf" "$KAFKA_LIBS"
  touch "$KAFKA_LIBS.tmp/.complete"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
fi

# A Kafka this script started that is still loading its logs (after a
# SIGKILL it recovers every partition first) has no port open yet: wait for
# it rather than start a second broker on the same store, which fails on the
# store's lock and leaves the pid file naming the dead one.
kafka_starting() {
  local pid
  pid=$(cat "$RUN/kafka.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    grep -qa kafka.Kafka "/proc/$pid/cmdline" 2>/dev/null
}
if port_open "$KAFKA_PORT"; then
  log "kafka already listening on 127.0.0.1:$KAFKA_PORT"
elif kafka_starting; then
  log "kafka (pid $(cat "$RUN/kafka.pid")) is starting; waiting for it"
else
  KDIR="$RUN/kafka"
  mkdir -p "$KDIR"
  [ -s "$KDIR/cluster.id" ] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$KDIR/cluster.id"
  cat >"$KDIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KDIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.recovery.threads.per.data.dir=2
EOF
  cat >"$KDIR/log4j2.properties" <<'EOF'
status = error
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
EOF
  if [ ! -e "$KDIR/data/meta.properties" ]; then
    log "formatting kafka storage in $KDIR/data (cluster id $(cat "$KDIR/cluster.id"))"
    java -cp "$KAFKA_LIBS/*" \
      kafka.tools.StorageTool format -t "$(cat "$KDIR/cluster.id")" \
      -c "$KDIR/server.properties" --ignore-formatted >&2
  fi
  log "starting kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT, controller on :$KAFKA_CONTROLLER_PORT"
  # shellcheck disable=SC2086 # KAFKA_HEAP is a list of JVM options
  # The last broker's log stays beside the new one, for a restart that failed.
  [ -e "$RUN/kafka.log" ] && mv -f "$RUN/kafka.log" "$RUN/kafka.log.1"
  setsid nohup java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KDIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KDIR/server.properties" \
    </dev/null >"$RUN/kafka.log" 2>&1 &
  echo $! >"$RUN/kafka.pid"
fi
if ! port_open "$KAFKA_PORT"; then
  # "Kafka Server started" is logged once the broker has registered with the
  # controller and been unfenced, i.e. it serves metadata and produce requests.
  # A broker SIGKILLed recovers every partition's log first: thousands of
  # them (each test run makes its own topics) on a busy machine take minutes.
  ok=
  started=$SECONDS
  deadline=$((SECONDS + ${PLEXUS_KAFKA_START_S:-240}))
  kpid=$(cat "$RUN/kafka.pid")
  why="not ready within $((deadline - SECONDS)) s"
  while [ "$SECONDS" -lt "$deadline" ]; do
    if grep -q "Kafka Server started" "$RUN/kafka.log" && port_open "$KAFKA_PORT"; then ok=1; break; fi
    if ! kill -0 "$kpid" 2>/dev/null; then
      why="exited after $((SECONDS - started)) s"
      break
    fi
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    log "kafka (pid $kpid) $why; its log: $RUN/kafka.log, the broker's before it: $RUN/kafka.log.1"
    tail -n 30 "$RUN/kafka.log" >&2 || true
    log "kafka (pid $kpid) $why"
    exit 1
  fi
  log "kafka ready after $((SECONDS - started)) s"
fi
log "kafka tools: java -cp \"\$PLEXUS_KAFKA_LIBS/*\" org.apache.kafka.tools.ConsoleProducer --bootstrap-server 127.0.0.1:$KAFKA_PORT --topic T"
log "             java -cp \"\$PLEXUS_KAFKA_LIBS/*\" org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server 127.0.0.1:$KAFKA_PORT --topic T --from-beginning"
log "             (also org.apache.kafka.tools.TopicCommand, kafka.tools.StorageTool)"

# --- nats -------------------------------------------------------------------
if ! command -v nats-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
    log "nats-server is missing and neither root nor sudo is available: install Debian's nats-server"; exit 1
  fi
  log "installing Debian's nats-server (apt-get)"
  nats_install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server >&2; }
  if ! nats_install; then
    log "apt-get install failed; refreshing the package lists once and retrying"
    "${SUDO[@]}" apt-get update >&2
    nats_install
  fi
fi
# Debian's package starts a system nats-server (no JetStream) on 4222 where
# systemd runs; ours is a separate process with its own store, pid and log.
if command -v systemctl >/dev/null && systemctl is-active --quiet nats-server 2>/dev/null; then
  log "stopping Debian's system nats-server (no JetStream) so ours can use port $NATS_PORT"
  if [ "$(id -u)" = 0 ]; then systemctl disable --now nats-server >&2 || true
  else sudo -n systemctl disable --now nats-server >&2 || true; fi
fi
NATSCLI="$CACHE/natscli-$NATSCLI_VERSION/bin/nats"
GO=$(command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true)
if [ ! -x "$NATSCLI" ] && [ -n "$GO" ]; then
  log "building the nats CLI $NATSCLI_VERSION with go install (first run only)"
  GOBIN="$CACHE/natscli-$NATSCLI_VERSION/bin" GOPATH="$CACHE/go" GOFLAGS=-modcacherw \
    "$GO" install "github.com/nats-io/natscli/nats@$NATSCLI_VERSION" >&2 ||
    log "go install of the nats CLI failed; its interop tests will be ignored"
fi
[ -x "$NATSCLI" ] || NATSCLI=

nats_ours() {
  [ -s "$RUN/nats.pid" ] && kill -0 "$(cat "$RUN/nats.pid")" 2>/dev/null &&
    [ "$(cat "$RUN/nats.port" 2>/dev/null)" = "$NATS_PORT" ]
}
if port_open "$NATS_PORT" && nats_ours; then
  log "nats already listening on 127.0.0.1:$NATS_PORT"
elif port_open "$NATS_PORT"; then
  log "port $NATS_PORT is taken by something that is not our nats-server (set PLEXUS_NATS_PORT)"; exit 1
else
  log "starting nats-server $(nats-server --version | sed -E 's/.*v//') (JetStream) on 127.0.0.1:$NATS_PORT"
  mkdir -p "$RUN/nats"
  # The file store writes each message before the publish is acknowledged, so
  # a SIGKILLed server loses no acknowledged message (only a kernel crash could
  # lose what is not yet fsynced).
  setsid nohup nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats" \
    --server_name plexus-test -l "$RUN/nats.log" \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$RUN/nats.pid"
  echo "$NATS_PORT" >"$RUN/nats.port"
  ok=
  for _ in $(seq 1 100); do
    if port_open "$NATS_PORT" && grep -q "Server is ready" "$RUN/nats.log" 2>/dev/null; then ok=1; break; fi
    kill -0 "$(cat "$RUN/nats.pid")" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    log "nats-server did not become ready (or exited); its log: $RUN/nats.log"
    tail -n 20 "$RUN/nats.log" >&2 || true
    exit 1
  fi
fi
if [ -n "$NATSCLI" ]; then
  log "nats tools: \$PLEXUS_NATS_CLI -s nats://127.0.0.1:$NATS_PORT stream ls (also pub, sub, stream get)"
fi

# --- rabbitmq ---------------------------------------------------------------
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
    log "rabbitmq-server is missing and neither root nor sudo is available: install Debian's rabbitmq-server"; exit 1
  fi
  log "installing Debian's rabbitmq-server (apt-get; Erlang comes with it)"
  rabbit_install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server >&2; }
  if ! rabbit_install; then
    log "apt-get install failed; refreshing the package lists once and retrying"
    "${SUDO[@]}" apt-get update >&2
    rabbit_install
  fi
fi
# Debian's package starts a system node where systemd runs (rabbit@HOST on
# 5672, epmd on 4369); ours is another node with its own name, epmd and ports.
if [ "$AMQP_PORT" = 5672 ] && command -v systemctl >/dev/null &&
  systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
  log "stopping Debian's system rabbitmq-server so ours can use port $AMQP_PORT"
  if [ "$(id -u)" = 0 ]; then systemctl disable --now rabbitmq-server >&2 || true
  else sudo -n systemctl disable --now rabbitmq-server >&2 || true; fi
fi
RDIR="$RUN/rabbitmq"
mkdir -p "$RDIR/bin" "$RDIR/home"
# Everything that names our node; the CLI wrappers read the same file.
{
  echo "export HOME=$(printf %q "$RDIR/home")"
  echo "export RABBITMQ_NODENAME=plexus@localhost"
  echo "export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
  echo "export RABBITMQ_NODE_PORT=$AMQP_PORT"
  echo "export RABBITMQ_DIST_PORT=$AMQP_DIST_PORT"
  echo "export ERL_EPMD_ADDRESS=127.0.0.1"
  echo "export ERL_EPMD_PORT=$AMQP_EPMD_PORT"
  echo "export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'"
  echo "export RABBITMQ_CONF_ENV_FILE=$(printf %q "$RDIR/rabbitmq-env.conf")"
  echo "export RABBITMQ_CONFIG_FILE=$(printf %q "$RDIR/rabbitmq.conf")"
  echo "export RABBITMQ_ENABLED_PLUGINS_FILE=$(printf %q "$RDIR/enabled_plugins")"
  echo "export RABBITMQ_MNESIA_BASE=$(printf %q "$RDIR/mnesia")"
  echo "export RABBITMQ_LOG_BASE=$(printf %q "$RDIR/log")"
  echo "export RABBITMQ_PID_FILE=$(printf %q "$RUN/rabbitmq.pid")"
} >"$RDIR/env"
: >"$RDIR/rabbitmq-env.conf" # instead of /etc/rabbitmq/rabbitmq-env.conf
{
  echo "listeners.tcp.default = 127.0.0.1:$AMQP_PORT"
  echo "management.tcp.ip = 127.0.0.1"
  echo "management.tcp.port = $AMQP_MGMT_PORT"
  echo "disk_free_limit.absolute = 50MB"
  echo "log.console = false"
  echo "log.file.level = info"
} >"$RDIR/rabbitmq.conf"
MGMT=
if ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_management-* >/dev/null 2>&1; then MGMT=1; fi
if [ -n "$MGMT" ]; then echo '[rabbitmq_management].' >"$RDIR/enabled_plugins"; else echo '[].' >"$RDIR/enabled_plugins"; fi
printf '#!/usr/bin/env bash\n. %q\nexec /usr/lib/rabbitmq/bin/rabbitmqctl "$@"\n' "$RDIR/env" >"$RDIR/bin/rabbitmqctl"
chmod +x "$RDIR/bin/rabbitmqctl"
RABBITMQADMIN=
if [ -n "$MGMT" ] && [ -x /usr/bin/rabbitmqadmin ]; then
  printf '#!/usr/bin/env bash\nexec /usr/bin/rabbitmqadmin -H 127.0.0.1 -P %q "$@"\n' "$AMQP_MGMT_PORT" >"$RDIR/bin/rabbitmqadmin"
  chmod +x "$RDIR/bin/rabbitmqadmin"
  RABBITMQADMIN="$RDIR/bin/rabbitmqadmin"
fi

rabbit_ours() {
  [ -s "$RUN/rabbitmq.pid" ] && kill -0 "$(cat "$RUN/rabbitmq.pid")" 2>/dev/null &&
    [ "$(cat "$RUN/rabbitmq.port" 2>/dev/null)" = "$AMQP_PORT" ]
}
# An AMQP 0-9-1 server answers the protocol header with a method frame
# (type 1, connection.start) once the broker has booted.
amqp_answers() {
  local reply
  { exec 3<>"/dev/tcp/127.0.0.1/$AMQP_PORT"; } 2>/dev/null || return 1
  printf 'AMQP\0\0\011\001' >&3
  reply=$(timeout 2 head -c 1 <&3 | od -An -tx1 | tr -d ' \n') || reply=
  exec 3<&- 3>&-
  [ "$reply" = 01 ]
}
if rabbit_ours && amqp_answers; then
  log "rabbitmq already listening on 127.0.0.1:$AMQP_PORT"
elif port_open "$AMQP_PORT" && ! rabbit_ours; then
  log "port $AMQP_PORT is taken by something that is not our rabbitmq-server (set PLEXUS_AMQP_PORT)"; exit 1
else
  if rabbit_ours; then
    log "our rabbitmq node (pid $(cat "$RUN/rabbitmq.pid")) does not answer AMQP; killing it"
    kill -9 "$(cat "$RUN/rabbitmq.pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$(cat "$RUN/rabbitmq.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$RUN/rabbitmq.pid"
  log "starting rabbitmq-server $(basename /usr/lib/rabbitmq/lib/rabbitmq_server-* | sed -E 's/.*-//') (node plexus@localhost) on 127.0.0.1:$AMQP_PORT${MGMT:+, management on :$AMQP_MGMT_PORT}"
  (
    # shellcheck disable=SC1091
    . "$RDIR/env"
    # The node writes its own (Erlang VM) pid to RABBITMQ_PID_FILE: the
    # process the broker-restart test SIGKILLs.
    setsid nohup /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >"$RUN/rabbitmq.log" 2>&1 &
    echo $! >"$RDIR/launcher.pid"
  )
  echo "$AMQP_PORT" >"$RUN/rabbitmq.port"
  # Erlang boots slowly, more so after a kill (the stores are replayed): wait
  # up to 120 s for AMQP, stopping early when the launcher has exited.
  ok=
  deadline=$((SECONDS + 120))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -s "$RUN/rabbitmq.pid" ] && amqp_answers; then ok=1; break; fi
    kill -0 "$(cat "$RDIR/launcher.pid")" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$ok" ]; then
    log "rabbitmq did not answer AMQP on port $AMQP_PORT within 120 s (or exited); logs: $RUN/rabbitmq.log, $RDIR/log/"
    tail -n 20 "$RUN/rabbitmq.log" >&2 || true
    tail -n 20 "$RDIR"/log/*.log >&2 2>/dev/null || true
    exit 1
  fi
fi
log "rabbitmq tools: \$PLEXUS_RABBITMQCTL list_queues${RABBITMQADMIN:+, \$PLEXUS_RABBITMQADMIN list queues (also publish, get)}"

# promtool checks the prompt service's alert rules (tests/prompts/alerts_test.ts).
bash "$HERE/promtool.sh" || log "promtool could not be installed: the alert rule tests fail under PLEXUS_REQUIRE_SERVICES=1"

echo "export DENO_KV_URL=http://127.0.0.1:$DENOKV_PORT DENO_KV_ACCESS_TOKEN=$DENOKV_TOKEN REDIS_URL=redis://127.0.0.1:$REDIS_PORT KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT PLEXUS_KAFKA_LIBS=$(printf %q "$KAFKA_LIBS") NATS_URL=nats://127.0.0.1:$NATS_PORT${NATSCLI:+ PLEXUS_NATS_CLI=$(printf %q "$NATSCLI")} AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT PLEXUS_RABBITMQCTL=$(printf %q "$RDIR/bin/rabbitmqctl")${RABBITMQADMIN:+ PLEXUS_RABBITMQADMIN=$(printf %q "$RABBITMQADMIN")} PLEXUS_RUN=$(printf %q "$RUN")"
