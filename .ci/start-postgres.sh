#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for atomicplug's database tests.
#
#   eval "$(.ci/start-postgres.sh)"      # as root on Debian/Ubuntu CI, or as any user
#   python -m pytest tests/test_database_*.py
#
# Installs the `postgresql` package when no server binaries exist (needs root),
# initialises a cluster in $ATOMICPLUG_PGDATA (default /var/tmp/atomicplug-pg),
# starts it on 127.0.0.1 ($ATOMICPLUG_PGPORT, default 5432, or the next free
# port), creates a role with CREATEDB (the tests make one database per test)
# and a database, then prints the one line the caller evals:
#   export ATOMICPLUG_TEST_POSTGRES_URL=postgresql://...
# Running it again reuses the cluster (starting it if it stopped). Everything
# else goes to stderr. Stop it with: pg_ctl -D "$ATOMICPLUG_PGDATA" stop
# (as the postgres user when started as root).
# The server runs with fsync=off: it is for tests only, never for data.
set -euo pipefail

PGDATA_DIR=${ATOMICPLUG_PGDATA:-/var/tmp/atomicplug-pg}
WANT_PORT=${ATOMICPLUG_PGPORT:-5432}
DB_NAME=${ATOMICPLUG_PGDATABASE:-atomicplug_test}
DB_ROLE=${ATOMICPLUG_PGUSER:-atomicplug}
DB_PASSWORD=${ATOMICPLUG_PGPASSWORD:-atomicplug}

log() { echo "start-postgres: $*" >&2; }
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

BIN=$(find_bin || true)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "no PostgreSQL server binaries under /usr/lib/postgresql; rerun as root to apt-get install them"
        exit 1
    fi
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN=$(find_bin)
fi

# Run server commands as `postgres` when we are root (initdb refuses root), else as ourselves.
if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    as_pg() { runuser -u postgres -- "$@"; }
    mkdir -p "$PGDATA_DIR"
    chown postgres: "$PGDATA_DIR"
else
    as_pg() { "$@"; }
    mkdir -p "$PGDATA_DIR"
fi
chmod 700 "$PGDATA_DIR"

if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    log "initdb in $PGDATA_DIR ($BIN)"
    as_pg "$BIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >&2
fi

if as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    PORT=$(cat "$PGDATA_DIR/atomicplug.port")
    log "already running on port $PORT"
else
    PORT=$WANT_PORT
    while port_busy "$PORT"; do
        log "port $PORT is taken, trying $((PORT + 1))"
        PORT=$((PORT + 1))
    done
    echo "$PORT" >"$PGDATA_DIR/atomicplug.port"
    [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA_DIR/atomicplug.port"
    log "starting on 127.0.0.1:$PORT"
    as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDATA_DIR -c fsync=off -c full_page_writes=off -c max_connections=200" \
        start >&2
fi

psql_admin() { as_pg "$BIN/psql" -h "$PGDATA_DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_ROLE'")" != 1 ]; then
    psql_admin -c "CREATE ROLE \"$DB_ROLE\" LOGIN CREATEDB PASSWORD '$DB_PASSWORD'" >&2
else
    psql_admin -c "ALTER ROLE \"$DB_ROLE\" LOGIN CREATEDB PASSWORD '$DB_PASSWORD'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_ROLE\"" >&2
fi

echo "export ATOMICPLUG_TEST_POSTGRES_URL=postgresql://$DB_ROLE:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"
