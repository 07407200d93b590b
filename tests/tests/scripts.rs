//! The project's shell scripts, where they touch files the user owns.

use std::process::Command;

/// `scripts/crash-test.sh` deleted the whole `CRASH_DIR` at the end,
/// with whatever was in it before. It now works in a new folder inside it
/// and removes only that. The run is cut short on purpose (a "Python" that
/// fails to make the inputs), which exercises the same cleanup.
#[test]
fn crash_test_keeps_what_crash_dir_held() {
    let dir = tempfile::tempdir().unwrap();
    let crash_dir = dir.path().join("crash");
    std::fs::create_dir(&crash_dir).unwrap();
    std::fs::write(crash_dir.join("marker"), b"mine").unwrap();
    let run = Command::new("bash")
        .arg(soup_tests::workspace().join("scripts/crash-test.sh"))
        .arg("--short")
        .env("CRASH_DIR", &crash_dir)
        .env("SOUP", "/bin/true")
        .env("SOUP_PYTHON", "/bin/false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the inputs cannot be made: {stderr}");
    assert!(
        stderr.contains("crash test:"),
        "it got as far as its folder: {stderr}"
    );
    assert_eq!(
        std::fs::read(crash_dir.join("marker")).ok().as_deref(),
        Some(&b"mine"[..]),
        "{stderr}"
    );
    assert_eq!(soup_tests::files_in(&crash_dir), ["marker"], "{stderr}");
}
