# Sourced by an instance's start script and by a backup job, as root:
# copies pgBackRest's TLS identity and each repository's S3 keys from the
# Swarm secrets (root's, mode 0400) to files only postgres reads, since
# pgBackRest runs as postgres. Keys go into an included config file, never
# onto a command line, into the environment or into a log.
pgbackrest_prepare() {
  pgbr=/var/lib/postgresql/pgbackrest
  (
    umask 077
    mkdir -p "$pgbr/tls" "$pgbr/conf.d" /tmp/pgbackrest
    cp /run/secrets/pgbackrest-tls-ca.crt "$pgbr/tls/ca.crt"
    cp /run/secrets/pgbackrest-tls.crt "$pgbr/tls/tls.crt"
    cp /run/secrets/pgbackrest-tls.key "$pgbr/tls/tls.key"
    for ca in /run/secrets/pgbackrest-repo*-ca.crt; do
      [ -e "$ca" ] && cp "$ca" "$pgbr/tls/"
    done
    {
      echo "[global]"
      for c in /run/secrets/pgbackrest-repo*-s3-credentials; do
        [ -e "$c" ] || continue
        n=${c#/run/secrets/pgbackrest-repo}
        n=${n%%-*}
        key=$(sed -n 's/^[[:space:]]*AWS_ACCESS_KEY_ID[[:space:]]*=[[:space:]]*//p' "$c" | tr -d '\r' | head -n 1)
        secret=$(sed -n 's/^[[:space:]]*AWS_SECRET_ACCESS_KEY[[:space:]]*=[[:space:]]*//p' "$c" | tr -d '\r' | head -n 1)
        if [ -z "$key" ] || [ -z "$secret" ]; then
          echo "haswarm: the credentials secret of repository $n lacks an AWS_ACCESS_KEY_ID= or AWS_SECRET_ACCESS_KEY= line" >&2
          exit 1
        fi
        echo "repo$n-s3-key=$key"
        echo "repo$n-s3-key-secret=$secret"
      done
    } >"$pgbr/conf.d/secrets.conf"
    chown -R postgres:postgres "$pgbr" /tmp/pgbackrest
    # SharedVolume repositories: pgBackRest writes as postgres under
    # <volume>/pgbackrest (an NFS export that squashes root must let the
    # postgres user, uid $(id -u postgres), write there).
    for v in /var/lib/haswarm-backup/*; do
      [ -d "$v" ] || continue
      mkdir -p "$v/pgbackrest"
      chown postgres:postgres "$v/pgbackrest"
      chmod 0750 "$v/pgbackrest"
    done
  )
}
