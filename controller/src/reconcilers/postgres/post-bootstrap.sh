#!/bin/sh
# Run once by Patroni on the member that initialised the cluster, as
# postgres, with a superuser connection string as $1: creates the
# application's user and database. psql reads the password from its file
# itself (\set with backquotes): it is never on a command line.
set -eu
: "${HASWARM_OWNER:?}" "${HASWARM_DATABASE:?}"
psql -X -q -v ON_ERROR_STOP=1 -v owner="$HASWARM_OWNER" -v db="$HASWARM_DATABASE" "$1" <<'SQL'
\set pw `cat /var/lib/postgresql/.haswarm-app-password`
CREATE ROLE :"owner" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"owner";
SQL
echo "haswarm: created user $HASWARM_OWNER and database $HASWARM_DATABASE"

# bootstrap.users: HASWARM_USERS is "role:ATTR,ATTR ..." (validated names
# and attribute keywords, LOGIN already decided by haswarm); each password
# is read from its file by psql, as above.
for entry in ${HASWARM_USERS:-}; do
  role=${entry%%:*}
  attrs=$(printf '%s' "${entry#*:}" | tr ',' ' ')
  {
    printf '\\set pw `cat /var/lib/postgresql/.haswarm-user-%s-password`\n' "$role"
    printf 'CREATE ROLE :"role" %s PASSWORD :%spw%s;\n' "$attrs" "'" "'"
  } | psql -X -q -v ON_ERROR_STOP=1 -v role="$role" "$1"
  echo "haswarm: created user $role"
done
