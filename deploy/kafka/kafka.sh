#!/usr/bin/env bash
# Development Kafka broker: fetch jars, start (formatting storage on first start), stop, manage ACLs.
#   kafka.sh fetch | up | down | status | acl <AclCommand arguments...>
#   e.g. kafka.sh acl --list --topic t-1
#        kafka.sh acl --add --deny-principal 'User:CN=x,O=loglake dev' --operation All --topic t-1
# Settings (environment): KAFKA_PORT, KAFKA_SASL_PORT, KAFKA_CONTROLLER_PORT, KAFKA_DATA, LOGLAKE_CERTS, PYTHON.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
jars="$here/.cache/libs"
port=${KAFKA_PORT:-19093}
cport=${KAFKA_CONTROLLER_PORT:-19094}
sport=${KAFKA_SASL_PORT:-19095}
# Bumped when the storage format changes (2: SCRAM users); older storage is reformatted.
storage_version=2
data=${KAFKA_DATA:-$root/var/kafka}
certs=${LOGLAKE_CERTS:-$root/var/certs}
python=${PYTHON:-$root/.venv/bin/python}
pidfile="$data/kafka.pid"
start_timeout=${KAFKA_START_TIMEOUT:-90}

fetch() {
  # The marker, written last, holds the digest of the pom.xml the jars came from: an interrupted
  # download is redone, not trusted, and a changed pom.xml (a dependency, a version) fetches again.
  local want; want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
  [ "$(cat "$jars/.complete" 2>/dev/null)" = "$want" ] && return 0
  if running; then   # never swap the jars under a running broker
    echo "kafka: $here/pom.xml changed since the running broker's jars were fetched;" \
      "restart it (kafka.sh down, then kafka.sh up) to fetch them" >&2
    exit 1
  fi
  echo "kafka: fetching broker jars from Maven Central (pom.xml new or changed)" >&2
  rm -rf "$jars"
  mvn -q -B -f "$here/pom.xml" package -Djars.dir="$jars"
  echo "$want" > "$jars/.complete"
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$here/log4j2.yaml" -cp "$jars/*")
java_run() { java "${java_opts[@]}" "$@"; }

up() {
  fetch
  [ -f "$certs/broker.keystore.pem" ] || { echo "kafka: no certificates in $certs; run 'make certs' first" >&2; exit 1; }
  if running; then echo "kafka: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  mkdir -p "$data"
  sed -e "s#@PORT@#$port#g" -e "s#@SASL_PORT@#$sport#g" -e "s#@CONTROLLER_PORT@#$cport#g" \
    -e "s#@DATA@#$data#g" -e "s#@CERTS@#$certs#g" "$here/server.properties.in" > "$data/server.properties"
  if [ "$(cat "$data/storage-version" 2>/dev/null)" != "$storage_version" ]; then
    echo "kafka: formatting storage in $data/log" >&2
    rm -rf "$data/log"
    # The SCRAM user "shipper" for the SASL_SSL listener; its password stays beside the certificates.
    [ -f "$certs/scram-shipper.password" ] || (umask 077; "$python" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$certs/scram-shipper.password")
    java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
      -c "$data/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=shipper,password=$(cat "$certs/scram-shipper.password")]" \
      > "$data/format.log" 2>&1 || { cat "$data/format.log" >&2; exit 1; }
    echo "$storage_version" > "$data/storage-version"
  fi
  nohup java "${java_opts[@]}" kafka.Kafka "$data/server.properties" > "$data/server.log" 2>&1 &
  echo $! > "$pidfile"
  # Return only once the broker answers a real request over mutual TLS.
  local deadline=$((SECONDS + start_timeout))
  until "$python" -m aggregator.cli.topics ping --bootstrap "127.0.0.1:$port" --certs "$certs" >/dev/null 2>&1; do
    if ! running; then echo "kafka: broker exited; last lines of $data/server.log:" >&2; tail -20 "$data/server.log" >&2; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then echo "kafka: broker did not answer within ${start_timeout}s; see $data/server.log" >&2; down; exit 1; fi
    sleep 0.5
  done
  echo "kafka: up (pid $(cat "$pidfile")) on SSL://127.0.0.1:$port and SASL_SSL://127.0.0.1:$sport"
}

down() {
  if ! running; then rm -f "$pidfile"; echo "kafka: not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  echo "kafka: stopped"
}

# Kafka's AclCommand against the broker, over mutual TLS as the broker's own principal (a super user:
# server.properties.in). --remove asks for confirmation unless given --force.
acl() {
  fetch
  running || { echo "kafka: not running; start it with kafka.sh up" >&2; exit 1; }
  cat > "$data/admin-client.properties" <<EOF
security.protocol=SSL
ssl.keystore.type=PEM
ssl.keystore.location=$certs/broker.keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$certs/ca.crt
ssl.endpoint.identification.algorithm=https
EOF
  # The tool's own output only: the client's INFO lines (its whole configuration) would drown it.
  cat > "$data/tools-log4j2.yaml" <<EOF
Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
EOF
  java_run "-Dlog4j2.configurationFile=$data/tools-log4j2.yaml" org.apache.kafka.tools.AclCommand \
    --bootstrap-server "127.0.0.1:$port" --command-config "$data/admin-client.properties" "$@"
}

status() { if running; then echo "kafka: running (pid $(cat "$pidfile"))"; else echo "kafka: stopped"; exit 1; fi; }

case "${1:-}" in
  fetch) fetch ;; up) up ;; down) down ;; status) status ;; acl) shift; acl "$@" ;;
  *) echo "usage: $0 fetch|up|down|status|acl <AclCommand arguments...>" >&2; exit 2 ;;
esac
