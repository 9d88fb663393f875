#!/bin/sh
# Starts one PostgreSQL instance of a haswarm PostgresCluster under Patroni.
#
# The fixed settings come from /etc/haswarm/patroni.yml (a Swarm config), the
# instance's name and addresses from PATRONI_* variables (no secret among
# them), the passwords from /run/secrets/pg-*-password (Swarm secrets). The
# passwords are written only into the runtime config in the data volume
# (mode 0600, owned by postgres): never onto a command line or into the
# environment. A trailing newline in a secret is not part of the password.
#
# Roles are Patroni's business: it bootstraps the first member that takes
# the initialize key in etcd, clones the others from the leader, and a
# member that restarts follows whoever holds the leader key.
set -eu
: "${PATRONI_NAME:?}"

home=/var/lib/postgresql
conf=$home/haswarm-patroni.yml
umask 077
# A volume from a driver that does not copy the image's ownership is root's.
chown postgres:postgres "$home"
chmod 0700 "$home"

# quote FILE: the file's content as a YAML double-quoted string.
quote() {
  printf '"%s"' "$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' "$1")"
}

{
  cat /etc/haswarm/patroni.yml
  # The template ends inside its `postgresql:` section.
  echo "  authentication:"
  echo "    superuser:"
  echo "      username: postgres"
  echo "      password: $(quote /run/secrets/pg-superuser-password)"
  echo "    replication:"
  echo "      username: replicator"
  echo "      password: $(quote /run/secrets/pg-replication-password)"
  # Reads (health, /cluster, /primary for the routers) stay open; changes
  # (switchover, restart, configuration) need haswarm's password.
  echo "restapi:"
  echo "  listen: 0.0.0.0:8008"
  echo "  authentication:"
  echo "    username: haswarm"
  echo "    password: $(quote /run/secrets/pg-api-password)"
} >"$conf"
chown postgres:postgres "$conf"
# Left by an earlier version (the application passwords are set by a
# haswarm job now, not at bootstrap).
rm -f "$home/.haswarm-app-password" "$home"/.haswarm-user-*-password

# With backups: pgBackRest's TLS identity and S3 keys where only postgres
# reads them, and its TLS server, through which a backup job reaches this
# instance (it lets in only the cluster's own certificate).
if [ -e /etc/haswarm/pgbackrest-prepare.sh ]; then
  . /etc/haswarm/pgbackrest-prepare.sh
  pgbackrest_prepare
  (
    while :; do
      runuser -u postgres -- pgbackrest --config=/etc/haswarm/pgbackrest.conf \
        --config-include-path=/var/lib/postgresql/pgbackrest/conf.d server || true
      sleep 2
    done
  ) &
fi

echo "haswarm: starting Patroni member $PATRONI_NAME"
exec runuser -u postgres -- patroni "$conf"
