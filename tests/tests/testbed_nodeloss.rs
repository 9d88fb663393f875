//! The test bed's node loss (`Bed::lose`/`Bed::restore`): a container on the
//! lost node stops running, the manager marks the node down, and both come
//! back on restore. Needs `tests/testbed/prepare.sh`.

use std::time::{Duration, Instant};

use haswarm_testbed::dind::Bed;
use haswarm_testbed::docker::{eventually, require_swarm};
use haswarm_testbed::one_at_a_time;

/// The counter the container on node 2 writes to the shared folder, read
/// from the host (no engine needed, so it reads while the node is lost).
/// Panics when it cannot be read: "it did not advance" must not pass on a
/// counter that was never read.
fn counter(bed: &Bed) -> u64 {
    let file = bed.shared.path().join("c");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Ok(n) = text.trim().parse() {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no counter in {file:?}: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(bed: &Bed, i: usize) -> String {
    bed.docker_on(
        1,
        &["node", "inspect", "-f", "{{.Status.State}}", &bed.node(i)],
    )
    .trim()
    .to_owned()
}

#[test]
fn a_lost_node_freezes_its_containers_and_comes_back() {
    require_swarm();
    let _one = one_at_a_time();
    let bed = Bed::up("hswfz", 2);
    // A plain container (no orchestrator to replace it while the node is
    // down), counting every 0.2 s into the shared folder.
    let run = bed.docker_on(
        2,
        &[
            "run", "-d", "-v", "/srv/shared:/out", "haswarm/probe:latest", "sh", "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /out/c.new; mv /out/c.new /out/c; sleep 0.2; done",
        ],
    );
    assert!(
        !run.trim().is_empty(),
        "the counter did not start on node 2"
    );
    let first = counter(&bed);
    assert!(
        eventually(Duration::from_secs(10), || counter(&bed) > first),
        "the counter does not count"
    );

    bed.lose(2);
    let frozen = counter(&bed);
    assert!(
        eventually(Duration::from_secs(60), || status(&bed, 2) == "down"),
        "the manager does not mark the lost node down: {}",
        status(&bed, 2)
    );
    assert_eq!(counter(&bed), frozen, "the lost node's container ran on");

    bed.restore(2);
    assert!(
        eventually(Duration::from_secs(10), || counter(&bed) > frozen),
        "the restored node's container does not run again"
    );
    assert!(
        eventually(Duration::from_secs(60), || status(&bed, 2) == "ready"),
        "the restored node is not ready again: {}",
        status(&bed, 2)
    );
    // Restoring a node that is not lost does nothing.
    bed.restore(2);
}
