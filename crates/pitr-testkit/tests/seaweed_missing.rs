//! A machine without SeaweedFS fails S3 tests with an install hint instead of skipping them.
//! (A test binary of its own: it changes the environment.)
#![allow(clippy::unwrap_used)]

use pitr_testkit::SeaweedFs;

#[test]
fn a_missing_weed_binary_fails_with_an_install_hint() {
    std::env::set_var("PITR_SEAWEEDFS_BIN", "/nonexistent/weed");
    let panic = std::panic::catch_unwind(SeaweedFs::start).unwrap_err();
    std::env::remove_var("PITR_SEAWEEDFS_BIN");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("/nonexistent/weed"), "{msg}");
    assert!(
        msg.contains("scripts/install-test-deps.sh seaweedfs"),
        "{msg}"
    );
}
