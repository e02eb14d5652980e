//! What dualpub does with the directory `[store] path` names, through the real binary: it never takes over a
//! directory that holds someone else's files, and the commands that only look at the store never create one nor
//! change its directory's mode.

mod common;

use common::*;
use dualpub::sim::gen::GenConfig;
use dualpub::sim::platform::Faults;
use std::path::Path;
use std::process::Output;

/// Every command that opens the store, as a test runs it.
const STORE_COMMANDS: [&[&str]; 8] = [
    &["status"],
    &["status", "--json"],
    &["quarantine", "list"],
    &["quarantine", "show", "XK-2024-000001"],
    &["quarantine", "retry"],
    &["sync", "--today", TODAY],
    &["reconcile", "--today", TODAY],
    &["report", "annual", "--year", "2026", "--today", TODAY],
];

/// The commands that only look at the store. (`reconcile` without `--repair` and `report` read it too; with none
/// there, they compare as if nothing had been sent yet: `reports_before_the_first_sync_create_no_store`.)
const LOOKING: [&[&str]; 4] = [
    &["status"],
    &["status", "--json"],
    &["quarantine", "list"],
    &["quarantine", "list", "--json"],
];

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression (D2): `[store] path` naming a directory of someone else's (a typo such as `/tmp` or `/var/lib`) was
/// taken over: set to 0700 (with a warning that said so) and filled with sled's files, by `status` too.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_holds_other_files_is_not_taken_over() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    for (name, dir_mode) in [("faketmp", 0o1777), ("someones", 0o755)] {
        let dir = env.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("someone_elses_file"), "theirs").unwrap();
        set_mode(&dir, dir_mode);
        let path = dir.to_str().unwrap();
        for args in STORE_COMMANDS {
            let out = env
                .dualpub_with(args, &[("DUALPUB_STORE_PATH", path)])
                .await;
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(
                err.contains(&format!("[store] path {path} ")),
                "{args:?}: {err}"
            );
            assert!(err.contains("someone_elses_file"), "{args:?}: {err}");
            // what to do
            assert!(
                err.contains("a directory that does not exist yet"),
                "{args:?}: {err}"
            );
            assert!(!err.contains("0700 ("), "{args:?}: {err}");
            assert!(!err.contains("set it to 0700"), "{args:?}: {err}");
            assert_eq!(mode(&dir), dir_mode, "{name} {args:?}: mode unchanged");
            assert_eq!(names(&dir), ["someone_elses_file"], "{name} {args:?}");
        }
    }
}

/// Regression (D2): `status` (and every command that only reads the store) created a store in an existing empty
/// directory and set its mode; it now says there is no store yet, as for a missing path, and leaves the directory
/// as it is. A command that writes takes the empty directory as its store, set to 0700.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_at_an_empty_directory_creates_no_store() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let store = env.store_path();
    std::fs::create_dir(&store).unwrap();
    set_mode(&store, 0o755);
    for args in LOOKING {
        let out = env.dualpub(args).await;
        let err = stderr(&out);
        assert!(
            err.contains(&format!("no store at {} yet", store.display())),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains("`dualpub sync` creates it"), "{args:?}: {err}");
        assert!(names(&store).is_empty(), "{args:?}: {:?}", names(&store));
        assert_eq!(mode(&store), 0o755, "{args:?}");
    }
    // `quarantine retry` writes the store, but has nothing to retry in a store that is not there
    let out = env.dualpub(&["quarantine", "retry"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no store at"), "{}", stderr(&out));
    assert!(names(&store).is_empty(), "{:?}", names(&store));
    assert_eq!(mode(&store), 0o755);

    // the first sync makes it the store, for its owner only
    let (code, _, err) = env.sync(&[]).await;
    assert!(code == 0 || code == 1, "{err}");
    assert!(err.contains("dualpub set it to 0700"), "{err}");
    assert_eq!(mode(&store), 0o700);
    assert!(names(&store).contains(&"conf".to_string()));
}

/// Regression: `reconcile` (without `--repair`) and `report annual` created a store at `[store] path` when there was
/// none, and set an existing empty directory to 0700, as a sync does: a mistyped path left an empty store behind,
/// which `status` then showed as "never run". They now read the source and the platform against an empty,
/// throw-away store, say that there is no store yet, and leave the path as it was; `reconcile --repair` sends, and
/// creates the store.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_before_the_first_sync_create_no_store() {
    let env = spawn(
        GenConfig {
            records: 60,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    let empty = env.store_path();
    std::fs::create_dir(&empty).unwrap();
    set_mode(&empty, 0o755);
    let missing = env.dir.path().join("not-yet");
    let reports: [&[&str]; 2] = [
        &["reconcile", "--today", TODAY, "--format", "json"],
        &[
            "report", "annual", "--year", "2026", "--today", TODAY, "--format", "json",
        ],
    ];
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for path in [&empty, &missing] {
        let var = [
            ("DUALPUB_STORE_PATH", path.to_str().unwrap()),
            ("TMPDIR", tmp.to_str().unwrap()),
        ];
        for args in reports {
            let out = env.dualpub_with(args, &var).await;
            let err = stderr(&out);
            assert!(matches!(out.status.code(), Some(0 | 1)), "{args:?}: {err}");
            assert!(
                err.contains(&format!("no store at {} yet", path.display())),
                "{args:?}: {err}"
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {err}"));
            assert!(report.is_object(), "{args:?}: {report}");
            // the throw-away store is gone with the process
            assert!(names(&tmp).is_empty(), "{args:?}: {:?}", names(&tmp));
        }
        if path == &empty {
            assert!(names(path).is_empty(), "{:?}", names(path));
            assert_eq!(mode(path), 0o755);
        } else {
            assert!(!path.exists(), "{} was created", path.display());
        }
    }
    // Before any sync, every source record the platform lacks is a gap of the reconcile's.
    let out = env
        .dualpub_with(
            reports[0],
            &[("DUALPUB_STORE_PATH", missing.to_str().unwrap())],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The repair sends: it makes the store, for its owner only.
    let out = env
        .dualpub(&["reconcile", "--repair", "--today", TODAY])
        .await;
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    assert_eq!(mode(&empty), 0o700);
    assert!(names(&empty).contains(&"conf".to_string()));
}

/// The commands that only look at a store leave its directory's mode as it is (they warn); one that writes sets it
/// to 0700. A store that holds a file an operator left there is still the store.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_command_that_writes_sets_the_store_directory_to_0700() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let store = env.store_path();
    let (code, _, err) = env.sync(&[]).await;
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(mode(&store), 0o700);
    std::fs::write(store.join("notes.txt"), "moved here on 2026-11-27").unwrap();
    set_mode(&store, 0o755);
    for args in LOOKING {
        let out = env.dualpub(args).await;
        let err = stderr(&out);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{args:?}: {err}");
        assert!(
            err.contains("open to other users (mode 755)")
                && err.contains("the next `dualpub sync` sets it to 0700"),
            "{args:?}: {err}"
        );
        assert_eq!(mode(&store), 0o755, "{args:?}: left as it is");
    }
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = stderr(&out);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{err}");
    assert!(err.contains("dualpub set it to 0700"), "{err}");
    assert_eq!(mode(&store), 0o700);
    assert!(names(&store).contains(&"notes.txt".to_string()));
}

/// A store directory whose sled files were moved away but whose `LAST_RUN` mark (dualpub's own, since 2026-11-30)
/// was left: it was refused as "holding files that are not a dualpub store's (`LAST_RUN`)". It is the store's
/// directory: `status` finds no store in it, and a sync finds the mark ahead of an empty store — damage, said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_directory_left_with_only_its_last_run_mark_is_not_someone_elses() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let dir = env.dir.path().join("moved");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("LAST_RUN"), "5\n").unwrap();
    let path = [("DUALPUB_STORE_PATH", dir.to_str().unwrap())];
    let out = env.dualpub_with(&["status"], &path).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("not a dualpub store"),
        "{}",
        stderr(&out)
    );
    let out = env.dualpub_with(&["sync", "--today", TODAY], &path).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("is damaged") && err.contains("LAST_RUN"),
        "{err}"
    );
}

/// A `[store] path` that is a symbolic link to a directory that does not exist: sled's error said "File exists"
/// (the link's name is taken). The message names the link's target and what to do.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_path_linking_to_nothing_says_so() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let link = env.dir.path().join("store-link");
    let gone = env.dir.path().join("data/dualpub");
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    let path = [("DUALPUB_STORE_PATH", link.to_str().unwrap())];
    for args in [&["sync", "--today", TODAY][..], &["status"]] {
        let out = env.dualpub_with(args, &path).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("symbolic link") && err.contains(&gone.display().to_string()),
            "{args:?}: {err}"
        );
    }
}
