#!/bin/sh
# Wait for Postgres, then serve Prefect's API and UI on it.
set -eu
python - "${POSTGRES_HOST:-postgres}" <<'PY'
import socket, sys, time
end = time.time() + 180
while True:
    try:
        socket.create_connection((sys.argv[1], 5432), timeout=2).close()
        break
    except OSError:
        if time.time() > end:
            sys.exit("prefect: Postgres did not answer in 180 s")
        time.sleep(1)
PY
export PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://${PREFECT_DB_USER:-prefect}:${PREFECT_DB_PASSWORD}@${POSTGRES_HOST:-postgres}:5432/prefect"
exec prefect server start --host 0.0.0.0 --port 4200
