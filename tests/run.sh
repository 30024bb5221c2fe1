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

cargo test --locked --all-targets "$@"
