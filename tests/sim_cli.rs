//! The simulators as commands: they print where they listen, stop cleanly on Ctrl-C, and reject bad options with
//! exit code 2. And the generator's invalid records are each caught by the foundation's validation with the
//! intended finding code.

use dualpub::mapping::{DisplayPolicy, Domain, MappingContext, MappingSet};
use dualpub::model::Kind;
use dualpub::sim::gen::{self, GenConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn simulators_print_their_address_and_stop_on_ctrl_c() {
    for args in [["sim", "source"], ["sim", "platform"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dualpub"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap();
        let port: u16 = url
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        assert_ne!(port, 0);
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("it really listens");
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{args:?} did not stop on Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(code, Some(0), "{args:?} exits 0 after Ctrl-C");
    }
}

#[test]
fn bad_simulator_options_exit_2() {
    for args in [
        vec!["sim", "platform", "--error-rate", "1.5"],
        vec!["sim", "platform", "--latency-ms", "soon"],
        vec!["sim", "source", "--invalid-rate", "-0.1"],
        vec!["sim", "source", "--records", "many"],
        vec!["sim", "source", "--listen", "not-an-address"],
        vec!["sim", "teapot"],
        vec!["sim", "source", "--records", "99999999999"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dualpub"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn a_listen_address_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for which in ["source", "platform"] {
        let out = Command::new(env!("CARGO_BIN_EXE_dualpub"))
            .args(["sim", which, "--listen", &addr])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{which}: {err}");
        assert!(err.contains(&addr), "{which}: {err}");
    }
}

#[test]
fn every_generated_defect_is_caught_with_its_intended_code() {
    let cfg = GenConfig {
        records: 6_000,
        seed: 99,
        invalid_rate: 0.5,
        ..GenConfig::default()
    };
    let mappings = MappingSet::builtin();
    let ctx = MappingContext {
        agency_name: gen::agency().name,
        agency_credit_code: gen::agency().credit_code,
        display: DisplayPolicy::for_domain(Domain::WorkSafety, None),
        today: None,
    };
    let mut by_code = std::collections::BTreeMap::new();
    for kind in Kind::ALL {
        for i in 0..cfg.count(kind) {
            let rec = gen::record(&cfg, kind, i);
            let m = mappings.get(kind).map(&ctx, &rec);
            let codes: Vec<&str> = m.findings.iter().map(|f| f.code.as_str()).collect();
            match gen::defect(&cfg, kind, i) {
                None => assert!(
                    codes.is_empty(),
                    "{}: a clean record has findings {codes:?}",
                    rec.id
                ),
                Some(d) => {
                    assert_eq!(
                        codes,
                        [d.code()],
                        "{}: the defect {d:?} gives exactly its code",
                        rec.id
                    );
                    *by_code.entry(d.code()).or_insert(0) += 1;
                }
            }
        }
    }
    assert_eq!(by_code.len(), 7, "every defect kind occurs: {by_code:?}");
    assert!(by_code.values().sum::<i32>() > 2_500);
}
