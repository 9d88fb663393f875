#!/bin/sh
# Run once by Patroni on the member that initialised the cluster, as
# postgres, with a superuser connection string as $1: creates the
# application's user and database. The user has no password yet: haswarm
# sets it (and creates the further users) with a job once the cluster is
# up, so no application password is ever mounted into an instance.
set -eu
: "${HASWARM_OWNER:?}" "${HASWARM_DATABASE:?}"
# A cluster restored from a backup (spec.bootstrap.recovery) may have them
# already; its recovery settings (the source's restore_command and target)
# are taken out, so that replicas cloned from it later do not stop at the
# target or read the source's WAL.
psql -X -q -v ON_ERROR_STOP=1 -v owner="$HASWARM_OWNER" -v db="$HASWARM_DATABASE" "$1" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') AS make_owner \gset
\if :make_owner
CREATE ROLE :"owner" LOGIN;
\endif
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS make_db \gset
\if :make_db
CREATE DATABASE :"db" OWNER :"owner";
\endif
ALTER SYSTEM RESET restore_command;
ALTER SYSTEM RESET recovery_target_time;
ALTER SYSTEM RESET recovery_target_lsn;
ALTER SYSTEM RESET recovery_target_name;
ALTER SYSTEM RESET recovery_target_action;
ALTER SYSTEM RESET recovery_target_timeline;
SELECT pg_reload_conf();
SQL
echo "haswarm: created user $HASWARM_OWNER and database $HASWARM_DATABASE"
