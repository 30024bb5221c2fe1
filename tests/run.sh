#!/usr/bin/env bash
# Runs every test against the local PostgreSQL and RabbitMQ, starting them
# when they are down, and enabling RabbitMQ's management API, which the tests
# use to give each test its own vhost.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'tests/run.sh: %s\n' "$*" >&2; }

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)" main start
fi
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { log "PostgreSQL did not come up"; exit 1; }

if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached
fi
for _ in $(seq 1 90); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
rabbitmq-diagnostics -q check_running >/dev/null || { log "RabbitMQ did not come up"; exit 1; }
rabbitmq-plugins -q enable rabbitmq_management >/dev/null
for _ in $(seq 1 60); do
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
    sleep 1
done

# RabbitMQ 3.10's quorum queues with at-least-once dead-lettering crash a
# dead-letter worker each time their vhost is deleted, and every test deletes
# one; after enough runs the workers' supervisor gives up, and from then on
# declaring such a queue answers INTERNAL_ERROR until the broker restarts.
# Declare one in a scratch vhost, and restart RabbitMQ's app when that fails.
api=http://127.0.0.1:15672/api
probe_vhost="fw_probe_$$"
dead_lettering_works() {
    curl -fsS -u guest:guest -X PUT "$api/vhosts/$probe_vhost" >/dev/null &&
        curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
            -d '{"configure":".*","write":".*","read":".*"}' \
            "$api/permissions/$probe_vhost/guest" >/dev/null &&
        curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
            -d '{"durable":true,"arguments":{"x-queue-type":"quorum","x-dead-letter-exchange":"probe","x-dead-letter-strategy":"at-least-once","x-overflow":"reject-publish"}}' \
            "$api/queues/$probe_vhost/probe" >/dev/null
    local declared=$?
    curl -fsS -u guest:guest -X DELETE "$api/queues/$probe_vhost/probe" >/dev/null 2>&1
    curl -fsS -u guest:guest -X DELETE "$api/vhosts/$probe_vhost" >/dev/null 2>&1
    return "$declared"
}
if ! dead_lettering_works; then
    log "RabbitMQ cannot declare quorum queues with at-least-once dead-lettering (its dead-letter supervisor has stopped); restarting its app"
    rabbitmqctl -q stop_app
    rabbitmqctl -q start_app
    for _ in $(seq 1 60); do
        curl -fsS -u guest:guest "$api/overview" >/dev/null 2>&1 && break
        sleep 1
    done
    dead_lettering_works || { log "RabbitMQ still cannot declare the work queue's kind of queue"; exit 1; }
fi

cargo test --locked --all-targets "$@"
