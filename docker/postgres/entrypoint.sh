#!/bin/sh
# First start: make the cluster with the superuser password from POSTGRES_PASSWORD, allow password
# logins from the stack's network, run /docker-entrypoint-initdb.d/*.sh against a local-only
# server, stop it. Every start: exec postgres in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (docker/.env)}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    for f in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$f" ] && sh "$f"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$@"
