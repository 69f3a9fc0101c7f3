#!/usr/bin/env bash
# A PostgreSQL server on loopback for the sweep tests (tests/e2e/test_sweep_postgres.py): installs Debian's postgresql
# when missing, starts its cluster, makes a user and a database, and prints the line that exports their URL:
#
#     eval "$(sudo .ci/postgres.sh)"          # or as root: eval "$(.ci/postgres.sh)"
#     pytest tests/e2e/test_sweep_postgres.py
#
# Safe to run again with the server up (it only checks). Progress goes to stderr, so stdout is just the export line;
# the password is a throwaway one for a loopback-only test server (MULTITASK_PG_PASSWORD sets another: URL-safe
# characters, as it goes into the URL as it is).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # runuser and friends live there, outside a plain user's PATH
DB_USER=${MULTITASK_PG_USER:-multitask}
DB_NAME=${MULTITASK_PG_DB:-multitask_test}
DB_PASSWORD=${MULTITASK_PG_PASSWORD:-multitask-test-only}
say() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "run as root (sudo): it installs packages and acts as the postgres user"; exit 1
fi
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    say "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
# the package makes the "main" cluster unless the image turned that off
pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$VERSION main" || pg_createcluster "$VERSION" main >&2
PORT=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')
# the server refuses to run as root: start it as its own user (pg_ctlcluster as root might also hand over to systemd)
as_postgres() { runuser -u postgres -- "$@"; }
if ! as_postgres pg_ctlcluster "$VERSION" main status >/dev/null 2>&1; then
    say "starting PostgreSQL $VERSION on port $PORT"
    as_postgres pg_ctlcluster "$VERSION" main start >&2
fi
for _ in $(seq 30); do   # accepting connections, not just started
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { say "the server on 127.0.0.1:$PORT does not answer"; exit 1; }

sql() { as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -qtAX "$@"; }
if [ -z "$(sql -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
    sql -c "CREATE ROLE \"$DB_USER\" LOGIN" >&2
fi
# CREATEDB: a test makes an empty database of its own. The password goes in on stdin (quotes doubled), not on a
# command line that `ps` shows to every user
printf "ALTER ROLE \"%s\" WITH LOGIN CREATEDB PASSWORD '%s'" "$DB_USER" "${DB_PASSWORD//\'/\'\'}" | sql >&2
if [ -z "$(sql -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    sql -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\"" >&2
fi
say "PostgreSQL $VERSION up on 127.0.0.1:$PORT, database $DB_NAME, user $DB_USER"
# psycopg 3 named explicitly: a bare postgresql:// means psycopg2 to SQLAlchemy before 2.1
echo "export MULTITASK_TEST_POSTGRES=postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"
