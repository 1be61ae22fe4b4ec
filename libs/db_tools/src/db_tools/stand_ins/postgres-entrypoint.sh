#!/bin/sh
# The official postgres image's entrypoint contract, for the Debian stand-in: on an empty
# PGDATA, initdb with POSTGRES_USER / POSTGRES_PASSWORD, create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/* (*.sh, *.sql, *.sql.gz) on a server reachable only through
# its socket, then exec the server listening on every address.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_USER="${POSTGRES_USER:-postgres}"
    POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        echo "  set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of arguments
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    export PGUSER="$POSTGRES_USER"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo 'CREATE DATABASE :"db";' | psql -v ON_ERROR_STOP=1 --no-psqlrc -q \
            --dbname postgres -v db="$POSTGRES_DB"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh)
                echo "running $f"
                if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
            *.sql)
                echo "running $f"
                psql -v ON_ERROR_STOP=1 --no-psqlrc -q --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz)
                echo "running $f"
                gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --no-psqlrc -q --dbname "$POSTGRES_DB" ;;
            *)
                echo "ignoring $f" ;;
        esac
    done
    unset PGUSER
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
