//! The harness's own promises: a test past its budget fails, with its daemon
//! killed, and unwinds (so its cleanup guards run) rather than ending the
//! test process. Alone in its binary: it sets the budget for the process.

use std::time::Duration;

use haswarm_testbed::docker::eventually;
use haswarm_testbed::{assert_code, Daemon};

#[test]
#[should_panic(expected = "ran past its budget")]
fn a_test_past_its_budget_fails_with_its_daemon_killed_and_unwinds() {
    std::env::set_var("HASWARM_TEST_BUDGET", "10");
    let d = Daemon::start();
    assert_code(&d.ctl(&["get", "rsg"]), 0);
    // Another message than the expected one fails the test: a daemon that
    // still answers past the budget is caught here.
    assert!(
        eventually(Duration::from_secs(60), || d
            .ctl(&["get", "rsg"])
            .status
            .code()
            != Some(0)),
        "the daemon still answers past its budget"
    );
    // Reaching here, the test unwinds normally; dropping the daemon (its
    // watchdog) must fail it.
}
