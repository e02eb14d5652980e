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
