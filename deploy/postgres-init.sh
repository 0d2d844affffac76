#!/usr/bin/env bash
# One database per service, each with two login roles, and Keycloak's database. The postgres image runs
# this once, as POSTGRES_USER, when it initialises an empty data volume (/docker-entrypoint-initdb.d);
# later starts skip it, so a password changed in deploy/clinic.env afterwards must be changed in the
# database too (ALTER ROLE ... PASSWORD).
#
# For each service:
#   <service>_owner    owns the database and its public schema; `clinic migrate <service>` logs in as it,
#                      creates the tables, and grants the service role what it needs
#                      (CLINIC_DATABASE_SERVICE_ROLE)
#   <service>_service  the web app and the worker log in as it: no DDL, and only read and add on the
#                      audit log
# Only these two may connect to the database (CONNECT is taken from PUBLIC): one service's password
# opens no other service's data. Passwords come from <SERVICE>_DATABASE_OWNER_PASSWORD and
# <SERVICE>_DATABASE_PASSWORD, passed to the postgres container (deploy/clinic.env).
set -euo pipefail

psql_as_admin() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres "$@"
}

services=(scheduling sessions records notifications)

# Every password first: a run that stopped half-way would leave a volume that later starts never
# initialise again (PG_VERSION exists), with some services' roles missing for good.
missing=()
for service in "${services[@]}"; do
    for variable in "${service^^}_DATABASE_OWNER_PASSWORD" "${service^^}_DATABASE_PASSWORD"; do
        [ -n "${!variable:-}" ] || missing+=("$variable")
    done
done
[ -n "${KEYCLOAK_DATABASE_PASSWORD:-}" ] || missing+=(KEYCLOAK_DATABASE_PASSWORD)
if [ ${#missing[@]} -gt 0 ]; then
    echo "postgres-init: set ${missing[*]} (deploy/clinic.env); nothing was created" >&2
    exit 1
fi

for service in "${services[@]}"; do
    owner_password_variable=${service^^}_DATABASE_OWNER_PASSWORD
    service_password_variable=${service^^}_DATABASE_PASSWORD
    # Passwords reach psql through its environment (\getenv), never its command line, which any
    # process may read, and are quoted by psql (:'...'), never pasted into the SQL text.
    OWNER_PASSWORD=${!owner_password_variable} SERVICE_PASSWORD=${!service_password_variable} psql_as_admin \
        --set=database="$service" --set=owner="${service}_owner" --set=login="${service}_service" <<'SQL'
\getenv owner_password OWNER_PASSWORD
\getenv service_password SERVICE_PASSWORD
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"login" LOGIN PASSWORD :'service_password';
CREATE DATABASE :"database" OWNER :"owner";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"login";
\connect :"database"
ALTER SCHEMA public OWNER TO :"owner";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
    echo "postgres-init: database $service, roles ${service}_owner and ${service}_service"
done

# Keycloak's own database (deploy/keycloak): users, sessions, the clinic realm.
psql_as_admin <<'SQL'
\getenv password KEYCLOAK_DATABASE_PASSWORD
CREATE ROLE keycloak LOGIN PASSWORD :'password';
CREATE DATABASE keycloak OWNER keycloak;
REVOKE ALL ON DATABASE keycloak FROM PUBLIC;
\connect keycloak
ALTER SCHEMA public OWNER TO keycloak;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
echo "postgres-init: database keycloak, role keycloak"

# The maintenance and template databases are the administrator's alone: no service role has anything
# to do there (not even a temporary table).
psql_as_admin <<'SQL'
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
SQL
