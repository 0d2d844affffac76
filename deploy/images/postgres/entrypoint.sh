#!/usr/bin/env bash
# The clinic's PostgreSQL entrypoint, compatible with the official image's for what the clinic uses:
#  - POSTGRES_PASSWORD (required), POSTGRES_USER (default postgres), POSTGRES_DB (default the user),
#    POSTGRES_INITDB_ARGS, PGDATA;
#  - on an empty data directory: initdb (scram-sha-256, password required over TCP from anywhere,
#    trust on the container's own socket), then /docker-entrypoint-initdb.d/*.sql, *.sql.gz and *.sh
#    in name order against a server listening on its socket only (*.sh executed when executable,
#    else sourced), then the server restarts listening on all addresses;
#  - started as root, it hands the data directory to postgres and drops to that user.
# SIGTERM stops the server the fast way (clients disconnected, clean checkpoint): PostgreSQL itself
# would wait for every client to leave, and orchestrators send SIGTERM.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    if [ "$(stat -c %u "$PGDATA")" != "$(id -u postgres)" ]; then
        chown -R postgres:postgres "$PGDATA"
    fi
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# The variables init scripts expect (as in the official image).
export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

initialise() {
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "entrypoint: the database is not initialised and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    echo "entrypoint: initialising $PGDATA"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS holds several options
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    {
        echo
        echo "# Clinic containers: password login over TCP from anywhere the network lets in."
        echo "host all all all scram-sha-256"
    } >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

    # Socket only while the scripts run, so nothing connects over TCP to a half-made database.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null

    local psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    echo "entrypoint: running $f"
                    "$f"
                else
                    echo "entrypoint: sourcing $f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) echo "entrypoint: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" >/dev/null ;;
            *.sql.gz) echo "entrypoint: running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" >/dev/null ;;
            *) echo "entrypoint: ignoring $f" ;;
        esac
    done

    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "entrypoint: initialised; starting"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initialise
fi

# The server runs as a child so that SIGTERM (and SIGINT) become a fast shutdown.
postgres "${@:2}" &
server=$!
trap 'kill -INT "$server" 2>/dev/null' TERM INT
status=0
wait "$server" || status=$?
# wait returns early when a signal arrives: wait again for the server to finish its shutdown.
while kill -0 "$server" 2>/dev/null; do
    status=0
    wait "$server" || status=$?
done
exit "$status"
