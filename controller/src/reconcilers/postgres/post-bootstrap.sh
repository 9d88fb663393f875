#!/bin/sh
# Run once by Patroni on the member that initialised the cluster, as
# postgres, with a superuser connection string as $1: creates the
# application's user and database. The user has no password yet: haswarm
# sets it (and creates the further users) with a job once the cluster is
# up, so no application password is ever mounted into an instance.
set -eu
: "${HASWARM_OWNER:?}" "${HASWARM_DATABASE:?}"
psql -X -q -v ON_ERROR_STOP=1 -v owner="$HASWARM_OWNER" -v db="$HASWARM_DATABASE" "$1" <<'SQL'
CREATE ROLE :"owner" LOGIN;
CREATE DATABASE :"db" OWNER :"owner";
SQL
echo "haswarm: created user $HASWARM_OWNER and database $HASWARM_DATABASE"
