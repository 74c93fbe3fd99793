#!/bin/sh
# One database and owner each for MLflow and Prefect (passwords from the environment).
set -eu
for app in mlflow prefect; do
    user=$(printenv "$(echo "$app" | tr a-z A-Z)_DB_USER" || echo "$app")
    pass=$(printenv "$(echo "$app" | tr a-z A-Z)_DB_PASSWORD")
    psql -v ON_ERROR_STOP=1 -U postgres -d postgres -q \
        -v user="$user" -v pass="$pass" -v db="$app" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'pass';
CREATE DATABASE :"db" OWNER :"user";
SQL
done
