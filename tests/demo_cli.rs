//! `dualpub demo`, the README's first command: it runs end to end on a fresh machine, for the default set and for
//! sets too small to hold every change it shows.

use std::process::Command;

fn demo(extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dualpub"))
        .arg("demo")
        .args(extra)
        .env_remove("DUALPUB_CONFIG")
        .env_remove("DUALPUB_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_runs_end_to_end() {
    let (code, stdout, stderr) = demo(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("demo finished"), "{stderr}");
    // the repair at its end leaves nothing missing or stale
    let all = stdout + &stderr;
    assert!(all.contains("after repair: missing 0, stale 0"), "{all}");
}

#[test]
fn the_demo_runs_with_a_handful_of_records() {
    for n in ["1", "2", "5", "60"] {
        let (code, _, stderr) = demo(&["--records", n]);
        assert_eq!(code, Some(0), "--records {n}: {stderr}");
        assert!(stderr.contains("demo finished"), "--records {n}: {stderr}");
    }
}

#[test]
fn a_bad_record_count_is_a_usage_error() {
    let (code, _, stderr) = demo(&["--records", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--records"), "{stderr}");
}

/// Ctrl-C in the middle of the demo removes its folder (store and config) from $TMPDIR: it stayed there, ~4 MB a
/// time, as it did after a step that failed (only a demo that ran through removed it).
#[test]
fn a_demo_stopped_with_ctrl_c_leaves_no_folder_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let demo_dirs = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("dualpub-demo-"))
            .collect()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_dualpub"))
        .args(["demo", "--records", "20000"])
        .env_remove("DUALPUB_CONFIG")
        .env_remove("DUALPUB_LOG")
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while demo_dirs().is_empty() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!demo_dirs().is_empty(), "the demo made its folder");
    // Into its first sync.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a demo cut short is exit 3");
    assert_eq!(demo_dirs(), Vec::<String>::new(), "nothing left in $TMPDIR");
}
