//! End-to-end: the real `dualpub sync` binary against a platform whose 200 answers are not what DESIGN §3 promises
//! (a gateway in front of the platform simulator rewrites them): receipts that leave records out or answer them
//! twice, logins whose tokens the platform then refuses.

mod common;

use common::*;
use dualpub::model::Kind;
use dualpub::sim::gen::GenConfig;
use dualpub::sim::platform::Faults;
use dualpub::store::PlatformState;
use dualpub::xml::{Receipt, RecordResult, ResultStatus};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Both simulators, the source holding `records` generated records as [`gen_cfg`] makes them.
async fn spawn_records(records: u64) -> Env {
    spawn(
        GenConfig {
            records,
            ..gen_cfg()
        },
        Faults::default(),
    )
    .await
}

fn gen_cfg() -> GenConfig {
    GenConfig {
        records: 30,
        seed: 21,
        invalid_rate: 0.0,
        ..GenConfig::default()
    }
}

/// The keys of the records in the outbox.
fn outbox_keys(store: &dualpub::store::Store) -> HashSet<String> {
    store
        .outbox()
        .unwrap()
        .iter()
        .flat_map(|(_, b)| b.items.iter().map(|i| i.key.clone()))
        .collect()
}

/// The state the ledger gives each key the platform should hold as public.
fn ledger_states(env: &Env) -> Vec<(String, Option<PlatformState>)> {
    let (expected, _) = expected_public(&env.gen, today());
    let store = read_store(&env.store_path());
    expected
        .keys()
        .map(|k| (k.clone(), store.ledger_get(k).unwrap().map(|e| e.state)))
        .collect()
}

/// A receipt that gives some records no usable result — none, two that disagree, or `withdrawn` to an upsert — the
/// first time their keys are sent. The records were removed from the outbox all the same, left `pending` in the
/// ledger and never sent again, and the run ended with exit 0: had the platform not stored them, nobody would know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_receipt_gives_no_usable_result_are_sent_again() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let proxy = platform_proxy(
        env.platform.url(),
        receipt_rewrite(move |r: &mut Receipt| {
            let mut seen = seen.lock().unwrap();
            let mut results = Vec::new();
            for (i, res) in r.results.drain(..).enumerate() {
                if !seen.insert(res.key.clone()) {
                    results.push(res);
                    continue;
                }
                match i % 4 {
                    // left out
                    0 => {}
                    // answered twice, in different words
                    1 => {
                        results.push(RecordResult {
                            status: ResultStatus::Rejected,
                            code: "E".into(),
                            ..res.clone()
                        });
                        results.push(res);
                    }
                    // an answer to another question
                    2 => results.push(RecordResult {
                        status: ResultStatus::Withdrawn,
                        ..res
                    }),
                    _ => results.push(res),
                }
            }
            r.results = results;
        }),
    )
    .await;
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["rejected"], 0, "{s}");
    for (key, state) in ledger_states(&env) {
        assert_eq!(state, Some(PlatformState::Public), "{key}");
    }
    assert_eq!(read_store(&env.store_path()).outbox_len(), 0);
    let (expected, _) = expected_public(&env.gen, today());
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// A platform whose receipts never answer for one record, while they answer every other. Its batch stayed at the
/// head of the outbox: every later sync, retry and repair sent it first and stopped on exit 3, so no other record
/// ever moved again. Now the run sends it again twice, then gives it up as rejected (`NO_RESULT`, in quarantine with
/// its source text); the other records are published, and a `quarantine retry` once the platform is mended
/// publishes it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_receipts_never_answer_for_goes_to_quarantine_and_the_others_move_on() {
    never_answered_for(true).await;
}

/// The same record, the platform mended, sent by the cron run an hour after it was given up, with no operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_given_up_is_sent_by_itself_once_the_platform_answers() {
    never_answered_for(false).await;
}

/// A sync through a gateway that never answers for the first expected record: given up on (`NO_RESULT`), exit 1.
/// The records the platform should hold, that record's key, and the gateway's URL.
async fn first_record_given_up(
    env: &Env,
) -> (std::collections::BTreeMap<String, String>, String, String) {
    let (expected, _) = expected_public(&env.gen, today());
    let silent = expected.keys().next().unwrap().clone();
    let proxy = leaving_out(env, &silent).await;
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["rejected"], 1, "{s}");
    (expected, silent, proxy)
}

/// One record the receipts never answer for; once the platform is mended, an operator's `quarantine retry` sends it
/// (`retry`), or the hourly offer.
async fn never_answered_for(retry: bool) {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (expected, silent, proxy) = first_record_given_up(&env).await;
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.outbox_len(), 0);
        let held: Vec<_> = store.quarantine_iter().map(Result::unwrap).collect();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].key.as_deref(), Some(silent.as_str()));
        assert_eq!(held[0].reason, "rejected");
        assert_eq!(held[0].findings[0].code, "NO_RESULT");
        assert!(
            held[0].findings[0].en.contains("3 times"),
            "{:?}",
            held[0].findings
        );
        assert!(held[0].source.is_object(), "{:?}", held[0].source);
    }
    for (key, state) in ledger_states(&env) {
        let want = if key == silent {
            PlatformState::Rejected
        } else {
            PlatformState::Public
        };
        assert_eq!(state, Some(want), "{key}");
    }
    // The platform still leaves it out: it is not sent again within the hour, unless the source changes it or an
    // operator retries it.
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["pushed"], 0, "{s}");
    if retry {
        let out = env.dualpub(&["quarantine", "retry"]).await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    } else {
        // An hour later, the platform mended, a cron run sends it again by itself.
        given_up_two_hours_ago(&env);
        let (code, s, err) = env.sync(&[]).await;
        assert_eq!(code, 0, "{s} {err}");
        assert_eq!(
            (&s["pushed"], &s["rejected"]),
            (&1.into(), &0.into()),
            "{s}"
        );
    }
    for (key, state) in ledger_states(&env) {
        assert_eq!(state, Some(PlatformState::Public), "{key}");
    }
    let store = read_store(&env.store_path());
    assert_eq!((store.outbox_len(), store.quarantine_len()), (0, 0));
    drop(store);
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// A source whose records end with a field `"dualpub_lookup_only": true` (a source may add fields of its own, in
/// its own order). dualpub once marked the look-ups it made for a rejected record without a copy by appending just
/// that text, so a record given up on for want of an answer, when `quarantine retry` found it in the feed, was
/// taken for a look-up the feed could not settle: not sent, kept in quarantine for ever. It is sent like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_record_ending_like_the_old_lookup_mark_is_sent_by_a_retry() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let feed = feed_text_proxy(
        env.source.url(),
        Arc::new(|_query: &str, text: String| {
            #[derive(serde::Deserialize)]
            struct Page {
                items: Vec<Box<serde_json::value::RawValue>>,
                has_more: bool,
            }
            let Ok(page) = serde_json::from_str::<Page>(&text) else {
                return text;
            };
            let items: Vec<String> = page
                .items
                .iter()
                .map(|item| {
                    let body = item.get().trim_end().strip_suffix('}').unwrap();
                    format!("{body},\"dualpub_lookup_only\":true}}")
                })
                .collect();
            format!(
                "{{\"items\":[{}],\"has_more\":{}}}",
                items.join(","),
                page.has_more
            )
        }),
    )
    .await;
    let (expected, _) = expected_public(&env.gen, today());
    let silent = expected.keys().next().unwrap().clone();
    let platform = leaving_out(&env, &silent).await;
    let (code, s, err) = env
        .sync_with(&[
            ("DUALPUB_SOURCE_URL", feed.as_str()),
            ("DUALPUB_PLATFORM_URL", platform.as_str()),
        ])
        .await;
    assert_eq!((code, &s["rejected"]), (1, &1.into()), "{s} {err}");
    let held = read_store(&env.store_path())
        .quarantine_iter()
        .map(Result::unwrap)
        .next()
        .unwrap();
    assert_eq!(held.key.as_deref(), Some(silent.as_str()));
    assert_eq!(
        held.source["dualpub_lookup_only"], true,
        "{:?}",
        held.source
    );

    // The platform mended, the operator retries: the feed still serves that version, which is sent.
    let (out, err) = env.retry_reading(&feed).await;
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("not sent"), "{err}");
    let store = read_store(&env.store_path());
    assert_eq!(
        (store.outbox_len(), store.quarantine_len()),
        (0, 0),
        "{err}"
    );
    drop(store);
    for (key, state) in ledger_states(&env) {
        assert_eq!(state, Some(PlatformState::Public), "{key}");
    }
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// A [`PlatformRewrite`] that replaces the token of every login answer with `token`.
fn token_rewrite(token: &'static str) -> PlatformRewrite {
    Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
        if path != "/api/token" || status != 200 {
            return (status, body);
        }
        let mut t = dualpub::xml::read_token_response(&body).unwrap();
        t.token = token.into();
        let mut out = Vec::new();
        dualpub::xml::write_token_response(&t, &mut out);
        (status, out)
    })
}

/// A login whose token the platform then refuses (a gateway that mangles it, a clock gone wrong), or that holds no
/// token: the run logged in again at once after every 401, some hundred logins a second until the retry budget
/// was spent, and said "token expired".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_as_soon_as_it_is_issued_is_not_asked_for_again_at_once() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    for (token, says) in [
        (
            "not-the-issued-token",
            "the token its login had just issued",
        ),
        ("", "empty token"),
    ] {
        let issued = env.platform_stats().await["tokens_issued"]
            .as_u64()
            .unwrap();
        let proxy = platform_proxy(env.platform.url(), token_rewrite(token)).await;
        let (code, s, err) = env
            .sync_with(&[
                ("DUALPUB_PLATFORM_URL", proxy.as_str()),
                ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "4"),
            ])
            .await;
        assert_eq!(code, 3, "{s} {err}");
        let logins = env.platform_stats().await["tokens_issued"]
            .as_u64()
            .unwrap()
            - issued;
        // backoff from 50 ms doubling to 1 s over 4 s, for a few calls at once: some tens at most
        assert!(logins < 60, "{logins} logins in a run of 4 s");
        assert!(err.contains(says), "{err}");
        assert!(read_store(&env.store_path()).outbox_len() > 0);
    }
    // the platform mended, everything goes out
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    for (key, state) in ledger_states(&env) {
        assert_eq!(state, Some(PlatformState::Public), "{key}");
    }
}

/// A rejection whose code holds line breaks and whose message runs to 40 000 characters: the code forged lines in
/// the run's log and in `quarantine list`, and the message, kept whole, made every `reconcile --format xlsx` fail
/// (exit 3: "String exceeds Excel's limit of 32,767 characters") for as long as the record was rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_in_words_no_log_line_or_spreadsheet_cell_can_hold_is_kept_on_one_line_and_cut()
{
    let env = spawn(gen_cfg(), Faults::default()).await;
    let forged = "2026-01-01T00:00:00Z  INFO forged";
    let code = format!("E\n{forged}\r");
    let message = format!("line1\nline2\r\u{9b}31m{}", "长".repeat(40_000));
    let rewrite = {
        let (code, message) = (code.clone(), message.clone());
        receipt_rewrite(move |r: &mut Receipt| {
            if let Some(res) = r
                .results
                .iter_mut()
                .find(|res| res.status == ResultStatus::Accepted)
            {
                res.status = ResultStatus::Rejected;
                res.code = code.clone();
                res.message = message.clone();
            }
        })
    };
    let proxy = platform_proxy(env.platform.url(), rewrite).await;
    let (code_, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code_, 1, "{s} {err}");
    assert!(s["rejected"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        !err.lines().any(|l| l.starts_with(forged)),
        "a forged log line: {err}"
    );
    let out = env.dualpub(&["quarantine", "list"]).await;
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with(forged)) && !list.contains('\r'),
        "{list}"
    );
    let dir = env.dir.path().join("report.xlsx");
    let out = env
        .dualpub(&[
            "reconcile",
            "--today",
            TODAY,
            "--format",
            "xlsx",
            "--out",
            dir.to_str().unwrap(),
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Receipts that answer no record at all (the platform's fault, not the records'): the records stay in the outbox
/// under their batch's own key run after run (a key one byte longer at each resend grew without end before) and the
/// runs end with exit 3, for three runs; then they go to quarantine (`NO_RESULT`) so that they no longer stop every
/// run. Sent after a restart, the batch holds no source text: the entries keep the version's `updated_at`, and a
/// `quarantine retry` once the platform is mended sends the feed's copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_that_answer_nothing_keep_the_records_three_runs_then_quarantine_them() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (expected, _) = expected_public(&env.gen, today());
    let proxy = platform_proxy(
        env.platform.url(),
        receipt_rewrite(|r: &mut Receipt| r.results.clear()),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, s, err) = env
            .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
            .await;
        assert_eq!(code, 3, "{s} {err}");
        assert!(err.contains("answered no record"), "{err}");
        let outbox = read_store(&env.store_path()).outbox().unwrap();
        let keys: HashSet<String> = outbox
            .iter()
            .flat_map(|(_, b)| b.items.iter().map(|i| i.key.clone()))
            .collect();
        assert_eq!(keys, expected.keys().cloned().collect(), "{outbox:?}");
        ids.push(format!(
            "{:?}",
            outbox.iter().map(|o| &o.0).collect::<Vec<_>>()
        ));
    }
    assert_eq!(ids[0], ids[1]);
    // `status` says why the outbox does not empty, and for how long it has not.
    let out = env.dualpub(&["status", "--json"]).await;
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["outbox_records"], expected.len(), "{st}");
    assert_eq!(st["outbox_unanswered_records"], expected.len(), "{st}");
    assert_eq!(st["outbox_unanswered_receipts"], 6, "{st}");
    let text = String::from_utf8_lossy(&env.dualpub(&["status"]).await.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "{} of them left out by the platform's receipts, 6 time(s)",
            expected.len()
        )),
        "{text}"
    );
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 1, "{s} {err}");
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.outbox_len(), 0);
        let held: Vec<_> = store.quarantine_iter().map(Result::unwrap).collect();
        assert_eq!(held.len(), expected.len());
        for e in &held {
            assert_eq!(e.findings[0].code, "NO_RESULT");
            assert!(e.findings[0].en.contains("9 times"), "{:?}", e.findings);
            assert!(e.source.is_null(), "{:?}", e.source);
            assert!(e.source_updated_at.is_some());
        }
    }
    let out = env.dualpub(&["quarantine", "retry"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let store = read_store(&env.store_path());
    assert_eq!((store.outbox_len(), store.quarantine_len()), (0, 0));
    drop(store);
    for (key, state) in ledger_states(&env) {
        assert_eq!(state, Some(PlatformState::Public), "{key}");
    }
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// A penalty the platform holds as public, and its source record as the source simulator serves it now.
async fn published_penalty(env: &Env) -> (String, serde_json::Value) {
    let held = env.platform_records().await;
    for i in 0..env.gen.count(Kind::Penalty) {
        let r = dualpub::sim::gen::record(&env.gen, Kind::Penalty, i);
        let doc = r.doc_no.as_deref().unwrap_or("").trim().to_string();
        if let Some(key) = held.iter().find_map(|(k, v)| {
            (k.starts_with("XZCF") && k.ends_with(&format!(":{doc}")) && v.1 == "public")
                .then(|| k.clone())
        }) {
            return (key, env.source_record(&r.id).await);
        }
    }
    panic!("no published penalty")
}

/// A gateway that drops the results for `key` from every receipt.
async fn leaving_out(env: &Env, key: &str) -> String {
    leaving_out_times(env, key, usize::MAX).await
}

/// A gateway that drops the results for `key` from the first `times` receipts that hold one, and passes later ones on.
async fn leaving_out_times(env: &Env, key: &str, times: usize) -> String {
    let key = key.to_string();
    let left_out = Arc::new(Mutex::new(0usize));
    platform_proxy(
        env.platform.url(),
        receipt_rewrite(move |r: &mut Receipt| {
            let mut n = left_out.lock().unwrap();
            if *n < times && r.results.iter().any(|res| res.key == key) {
                *n += 1;
                r.results.retain(|res| res.key != key);
            }
        }),
    )
    .await
}

/// A penalty revoked at the source whose withdrawal the platform never answers: a message of that one withdrawal,
/// so its receipts answer nothing, and it is given up after nine. The run that gave it up read the revoked record
/// again in its overlap window and sent the withdrawal once more (the ledger still said public, and nothing said the
/// platform had been asked), dropping the quarantine entry: every run stopped with exit 3, for good. Now the give-up
/// holds: the record waits in quarantine, later runs send nothing, and a `quarantine retry` once the platform is
/// mended withdraws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_the_receipts_never_answer_for_is_given_up_for_good() {
    withdrawal_given_up_for_good(false).await;
}

/// The same for a penalty revoked in a version that fails validation (taken down all the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_revoked_version_whose_withdrawal_is_never_answered_is_given_up_for_good() {
    withdrawal_given_up_for_good(true).await;
}

/// A penalty published by a first sync, then revoked at the source (in a version that fails validation when
/// `invalid`): its key and source id.
async fn revoke_published_penalty(env: &Env, invalid: bool) -> (String, String) {
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (key, mut revoked) = published_penalty(env).await;
    let id = revoked["id"].as_str().unwrap().to_string();
    revoked["status"] = "revoked".into();
    if invalid {
        revoked["remarks"] = "\u{1}决定已撤销".into();
    }
    revoked["updated_at"] = serde_json::Value::Null;
    revoked["kind"] = "penalty".into();
    env.source_insert_one(revoked).await;
    (key, id)
}

async fn withdrawal_given_up_for_good(invalid: bool) {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, id) = revoke_published_penalty(&env, invalid).await;
    let proxy = leaving_out(&env, &key).await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    for _ in 0..2 {
        let (code, s, err) = env.sync_with(&via_proxy).await;
        assert_eq!(code, 3, "{s} {err}");
    }
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 1, "given up: {s} {err}");
    assert_eq!(s["rejected"], 1, "{s}");
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.outbox_len(), 0);
        let q = store
            .quarantine_get(Kind::Penalty, &id)
            .unwrap()
            .expect("in quarantine");
        // The same run read the revoked record again (overlap window): an invalid version is held for its
        // findings; the withdrawal is not sent again either way.
        let (reason, code) = if invalid {
            ("invalid", "xml_char")
        } else {
            ("rejected", "NO_RESULT")
        };
        assert_eq!(
            (q.reason.as_str(), q.key.as_deref()),
            (reason, Some(key.as_str()))
        );
        assert_eq!(q.findings[0].code, code);
    }
    if !invalid {
        let out = env.dualpub(&["quarantine", "show", &id]).await;
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains("no copy kept (a withdrawal"), "{shown}");
    }
    // Nor by later runs.
    for _ in 0..2 {
        let (code, s, err) = env.sync_with(&via_proxy).await;
        assert_eq!(code, 0, "{s} {err}");
        assert_eq!(s["pushed"], 0, "{s}");
    }
    assert!(read_store(&env.store_path())
        .quarantine_contains(Kind::Penalty, &id)
        .unwrap());
    // Once the platform is mended, a retry withdraws it.
    let out = env.dualpub(&["quarantine", "retry"]).await;
    assert_eq!(out.status.code(), Some(invalid as i32), "{out:?}");
    let store = read_store(&env.store_path());
    assert_eq!(
        (store.outbox_len(), store.quarantine_len()),
        (0, invalid as usize)
    );
    let e = store.ledger_get(&key).unwrap().unwrap();
    assert_eq!(
        (e.state, e.rejected_digest),
        (PlatformState::Withdrawn, None)
    );
    drop(store);
    assert_eq!(env.platform_records().await[&key].1, "withdrawn");
}

/// Three syncs through a gateway whose receipts answer no record: exit 3, 3, then 1, the records given up.
async fn given_up_through_receipts_that_answer_nothing(env: &Env) {
    let proxy = platform_proxy(
        env.platform.url(),
        receipt_rewrite(|r: &mut Receipt| r.results.clear()),
    )
    .await;
    for want in [3, 3, 1] {
        let (code, s, err) = env
            .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
            .await;
        assert_eq!(code, want, "{s} {err}");
    }
}

/// Makes every record given up for want of an answer look given up two hours ago.
fn given_up_two_hours_ago(env: &Env) {
    let store = read_store(&env.store_path());
    let then = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let aged: Vec<_> = store
        .quarantine_iter()
        .map(Result::unwrap)
        .filter(|q| q.findings.iter().any(|f| f.code == "NO_RESULT"))
        .map(|q| dualpub::store::QuarantineEntry {
            last_seen: then.clone(),
            ..q
        })
        .collect();
    assert!(!aged.is_empty());
    store
        .commit_page(&dualpub::store::PageCommit {
            quarantine_put: aged,
            ..Default::default()
        })
        .unwrap();
    store.flush().unwrap();
}

/// Records given up while the platform answered nothing waited in quarantine for an operator's `quarantine retry`
/// long after the platform was mended. Now a cron run offers each again an hour after it was given up, as the feed
/// serves that version (a withdrawal's entry holds no copy). Still left out, it goes back to quarantine after three
/// receipts — offered as a message of its own, it would otherwise have stopped three runs with exit 3 — and is not
/// a new rejection (exit 0); answered, it is done and leaves quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_given_up_for_want_of_an_answer_is_offered_again_an_hour_later() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, id) = revoke_published_penalty(&env, false).await;
    let proxy = leaving_out(&env, &key).await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let codes = [
        env.sync_with(&via_proxy).await.0,
        env.sync_with(&via_proxy).await.0,
        env.sync_with(&via_proxy).await.0,
    ];
    assert_eq!(codes, [3, 3, 1]);
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(
        (code, &s["pushed"]),
        (0, &0.into()),
        "within the hour: {s} {err}"
    );
    given_up_two_hours_ago(&env);
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(
        (&s["pushed"], &s["still_unanswered"], &s["rejected"]),
        (&1.into(), &1.into(), &0.into()),
        "{s}"
    );
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.outbox_len(), 0);
        let q = store
            .quarantine_get(Kind::Penalty, &id)
            .unwrap()
            .expect("back in quarantine");
        assert_eq!(q.findings[0].code, "NO_RESULT");
        let seen = chrono::DateTime::parse_from_rfc3339(&q.last_seen).unwrap();
        assert!(
            seen > chrono::Utc::now() - chrono::Duration::minutes(5),
            "{}",
            q.last_seen
        );
    }
    given_up_two_hours_ago(&env);
    // The platform mended: withdrawn, out of quarantine, without an operator.
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    // (The platform had withdrawn it at the first sending; only its answers were lost.)
    assert_eq!(
        (&s["pushed"], &s["rejected"]),
        (&1.into(), &0.into()),
        "{s}"
    );
    let store = read_store(&env.store_path());
    assert_eq!((store.outbox_len(), store.quarantine_len()), (0, 0));
    let e = store.ledger_get(&key).unwrap().unwrap();
    assert_eq!(
        (e.state, e.rejected_digest),
        (PlatformState::Withdrawn, None)
    );
    drop(store);
    assert_eq!(env.platform_records().await[&key].1, "withdrawn");
}

/// A record given up for want of an answer more than an hour ago, changed at the source since: the run sends the new
/// version, and then, its message still on its way, offers the given-up version again. The feed no longer serves that
/// version, so its entry leaves quarantine (`gone_from_source`) — but the entry removed was whatever quarantine held
/// under the record's name by then: the platform had meanwhile rejected the new version, and its rejection, just put
/// there by the receipt, was removed with it. The ledger kept the rejected content, so no later run sent the record
/// again, and nothing told anyone: a rejected record gone without a trace. The offer now leaves an entry that is no
/// longer the one it looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_that_comes_while_the_given_up_version_is_looked_up_stays_in_quarantine() {
    let env = spawn(
        gen_cfg(),
        Faults {
            latency_ms: 100,
            ..Faults::default()
        },
    )
    .await;
    let (_, silent, _) = first_record_given_up(&env).await;
    let id = {
        let store = read_store(&env.store_path());
        let q = store.quarantine_iter().next().unwrap().unwrap();
        assert_eq!(q.findings[0].code, "NO_RESULT");
        q.source_id
    };
    given_up_two_hours_ago(&env);
    // A new version, which the platform rejects; the feed answers slowly, so the look-up of the version given up is
    // still on its way when the rejection comes.
    let kind = if silent.starts_with("XZCF") {
        "penalty"
    } else {
        "permit"
    };
    let v = env.source_record(&id).await;
    env.source_insert_one(remarked(v, kind, "第二版")).await;
    let watched = silent.clone();
    let rejecting = platform_proxy(
        env.platform.url(),
        receipt_rewrite(move |r: &mut Receipt| {
            for res in r.results.iter_mut().filter(|res| res.key == watched) {
                res.status = ResultStatus::Rejected;
                res.code = "BAD_FIELD".into();
                res.message = "字段不合规".into();
            }
        }),
    )
    .await;
    env.admin_post(
        format!("{}/admin/latency", env.source.url()),
        serde_json::json!({"ms": 400}),
    )
    .await;
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", rejecting.as_str())])
        .await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["rejected"], 1, "{s}");
    let store = read_store(&env.store_path());
    let q = store
        .quarantine_find(&id)
        .unwrap()
        .unwrap_or_else(|| panic!("the rejected version is not in quarantine: {s}"));
    assert_eq!(
        (q.reason.as_str(), q.findings[0].code.as_str()),
        ("rejected", "BAD_FIELD"),
        "{q:?}"
    );
    assert_eq!(s["gone_from_source"], 0, "{s}");
}

/// Penalties whose display period has ended, one of them a withdrawal the platform's receipts never answer for
/// (they answer the others). Given up after three receipts, it was found again by the expiry pass of every later
/// run, sent three times more and given up again: every run ended with exit 1, for good. Now it waits in
/// quarantine, and later runs send nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_past_its_display_period_given_up_is_not_sent_by_every_run() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (key, v) = published_penalty(&env).await;
    let proxy = leaving_out(&env, &key).await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let later = || env.dualpub_with(&["sync", "--json", "--today", "2031-01-01"], &via_proxy);
    let out = later().await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{s} {out:?}");
    assert_eq!(s["rejected"], 1, "{s}");
    assert!(s["withdrawn"].as_u64().unwrap() > 0, "{s}");
    for _ in 0..2 {
        let out = later().await;
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(out.status.code(), Some(0), "{s} {out:?}");
        assert_eq!(s["pushed"], 0, "{s}");
    }
    let store = read_store(&env.store_path());
    let q = store
        .quarantine_get(Kind::Penalty, v["id"].as_str().unwrap())
        .unwrap()
        .expect("in quarantine");
    assert_eq!(q.findings[0].code, "NO_RESULT");
    assert_eq!(store.outbox_len(), 0);
}

/// `reconcile --repair --repair-orphans` against a platform whose receipts never answer for one of two orphans
/// (records no source record or ledger entry of ours names). Given up, the orphan went to quarantine under the empty
/// source id — where every orphan given up shares one entry — and `quarantine retry` could neither send it nor
/// look it up (no id, no time): it kept it for good, counted as still quarantined (exit 1) at every retry, and the
/// repair counted the withdrawal as done. Now no entry is made (there is no record to retry: reconcile lists it as
/// `orphan` again while the platform shows it), and the repair counts it as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_whose_withdrawal_is_never_answered_is_no_quarantine_entry_of_nobody() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // Two penalties published from another store, then deleted at the source: orphans our ledger knows nothing of.
    let (_, penalty) = published_penalty(&env).await;
    let orphans: Vec<serde_json::Value> = (0..2)
        .map(|n| {
            let mut o = penalty.clone();
            o["id"] = format!("CF-ORPHAN-{n}").into();
            o["doc_no"] = format!("豫应急罚〔2026〕9990{n}号").into();
            o["updated_at"] = serde_json::Value::Null;
            o["kind"] = "penalty".into();
            o
        })
        .collect();
    env.source_insert(serde_json::Value::Array(orphans)).await;
    let other = env.dir.path().join("another-store");
    let out = env
        .dualpub_with(
            &["sync", "--today", TODAY],
            &[("DUALPUB_STORE_PATH", other.to_str().unwrap())],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for n in 0..2 {
        env.source_delete(&format!("CF-ORPHAN-{n}")).await;
    }
    let keys: Vec<String> = env
        .platform_records()
        .await
        .into_keys()
        .filter(|k| k.contains("〔2026〕9990"))
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let proxy = leaving_out(&env, &keys[0]).await;
    let (out, report) = env
        .reconcile_json_with(
            TODAY,
            &["--repair", "--repair-orphans"],
            &[("DUALPUB_PLATFORM_URL", proxy.as_str())],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        report["repair"]["orphans_withdrawn"], 1,
        "{}",
        report["repair"]
    );
    assert_eq!(report["repair"]["failed"], 1, "{}", report["repair"]);
    {
        let store = read_store(&env.store_path());
        let held: Vec<_> = store.quarantine_iter().map(Result::unwrap).collect();
        assert!(held.is_empty(), "{held:?}");
        let e = store.ledger_get(&keys[0]).unwrap().unwrap();
        assert!(
            e.last_error
                .as_deref()
                .is_some_and(|m| m.starts_with("NO_RESULT")),
            "{e:?}"
        );
    }
    // (The simulator behind the gateway did withdraw it.) A later repair finds nothing left to do.
    let (out, report) = env
        .reconcile_json(TODAY, &["--repair", "--repair-orphans"])
        .await;
    assert_eq!(out.status.code(), Some(1), "late rows: {out:?}");
    let orphans = report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["category"] == "orphan")
        .count();
    assert_eq!(orphans, 0, "{}", report["gaps"]);
    assert_eq!(report["repair"]["failed"], 0, "{}", report["repair"]);
    assert!(read_store(&env.store_path()).quarantine_is_empty());
}

/// Records whose ids are unlike the generator's — one that looks like the name quarantine gives a numeric id but is
/// not one (`(id 6 )`), one that is exactly such a name (`(id 6)`), one with quotes, a backslash and other scripts —
/// given up after nine unanswered receipts, so their entries hold no copy: `quarantine retry` looks each version up
/// in the feed by the entry's name. `(id 6 )` was looked for as the number 6, named `(id 6)`: the feed's record
/// never matched, the retry took it for gone from the source and removed the entry of `(id 6)` instead — while its
/// own stayed, never sent, at every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_looks_up_records_with_any_id_under_their_own_name() {
    let env = spawn_records(4).await;
    let ids = ["(id 6 )", "(id 6)", "XK-\"引号\"\\反斜杠-①\u{3000}"];
    let template = {
        let r = dualpub::sim::gen::record(&env.gen, Kind::Permit, 0);
        env.source_record(&r.id).await
    };
    let mut docs = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let doc = format!("（豫）WH安许证字〔2026〕77700{n}");
        let mut v = template.clone();
        v["id"] = (*id).into();
        v["doc_no"] = doc.clone().into();
        v["permit_no"] = doc.clone().into();
        v["updated_at"] = serde_json::Value::Null;
        v["kind"] = "permit".into();
        env.source_insert_one(v).await;
        docs.push(doc);
    }
    given_up_through_receipts_that_answer_nothing(&env).await;
    {
        let store = read_store(&env.store_path());
        for id in ids {
            let q = store.quarantine_get(Kind::Permit, id).unwrap();
            let q = q.unwrap_or_else(|| panic!("{id} in quarantine"));
            assert!(q.source.is_null(), "{id}: {:?}", q.source);
            assert_eq!(q.findings[0].code, "NO_RESULT");
        }
    }
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("no longer in the enforcement system"),
        "{err}"
    );
    let store = read_store(&env.store_path());
    assert_eq!((store.outbox_len(), store.quarantine_len()), (0, 0));
    drop(store);
    let held = env.platform_records().await;
    for doc in &docs {
        let key = format!("XZXK:{}:{doc}", agency_code());
        assert_eq!(
            held.get(&key).map(|h| h.1.as_str()),
            Some("public"),
            "{key}"
        );
    }
}

/// A penalty whose latest version fails validation (held in quarantine; the version before stays public) comes to
/// the end of its display period, and the platform never answers its withdrawal. Given up, the withdrawal — sent for
/// the public version — took the quarantine entry of the newer, invalid version: its findings were gone, and a
/// `quarantine retry` (as the entry advised) looked the public version up, found it changed since, and removed the
/// entry, so the invalid version was in quarantine no more, and no sync would read it again. Now the newer
/// version's entry stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_given_up_leaves_the_entry_of_a_newer_version_alone() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (key, mut v) = published_penalty(&env).await;
    let id = v["id"].as_str().unwrap().to_string();
    v["remarks"] = "\u{1}补充说明".into();
    v["updated_at"] = serde_json::Value::Null;
    v["kind"] = "penalty".into();
    env.source_insert_one(v).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    let held_codes = |env: &Env| {
        let q = read_store(&env.store_path())
            .quarantine_get(Kind::Penalty, &id)
            .unwrap();
        q.map(|q| (q.reason, q.findings[0].code.clone()))
    };
    let invalid = Some(("invalid".to_string(), "xml_char".to_string()));
    assert_eq!(held_codes(&env), invalid);
    // Another penalty changed later, read by a later run: the feed has been read past the invalid version.
    let other = (0..env.gen.count(Kind::Penalty))
        .map(|i| dualpub::sim::gen::record(&env.gen, Kind::Penalty, i).id)
        .find(|o| *o != id)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    env.admin_post(
        format!("{}/admin/touch", env.source.url()),
        serde_json::json!({"kind": "penalty", "ids": [other]}),
    )
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    let proxy = leaving_out(&env, &key).await;
    let out = env
        .dualpub_with(
            &["sync", "--json", "--today", "2031-01-01"],
            // as a run some time later, which does not read the invalid version again
            &[
                ("DUALPUB_PLATFORM_URL", proxy.as_str()),
                ("DUALPUB_SYNC_OVERLAP_MINUTES", "0"),
            ],
        )
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{s} {out:?}");
    assert_eq!(s["rejected"], 1, "{s}");
    assert_eq!(
        s["quarantined"], 0,
        "the invalid version is not read again: {s}"
    );
    assert_eq!(held_codes(&env), invalid);
    let out = env.dualpub(&["quarantine", "retry"]).await;
    assert_eq!(out.status.code(), Some(1), "still invalid: {out:?}");
    assert_eq!(held_codes(&env), invalid);
}

/// Reconcile's rows for `key`: (category, detail).
fn rows_for(report: &serde_json::Value, key: &str) -> Vec<(String, String)> {
    report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["key"] == key && g["category"] != "late")
        .map(|g| {
            (
                g["category"].as_str().unwrap().to_string(),
                g["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A record given up for want of an answer (`NO_RESULT`) was not refused by the platform, and the operator is told
/// to ask whether the platform holds it. Reconcile, which reads what it holds, listed it as `rejected` (the platform
/// refused it: "fix the record") whether the platform held it or not, and `--repair` never sent it. Now the
/// platform's listing decides: holding this version, it is no gap; not holding it, it is `missing`, and `--repair`
/// sends it (which settles the quarantine entry and the ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_judges_a_record_without_an_answer_by_what_the_platform_holds() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (_, silent, _) = first_record_given_up(&env).await;
    // The simulator behind the gateway did store it.
    assert_eq!(env.platform_records().await[&silent].1, "public");
    let (_, report) = env.reconcile_json(TODAY, &[]).await;
    assert_eq!(rows_for(&report, &silent), vec![], "{}", report["gaps"]);
    assert_eq!(report["counts"]["rejected"], 0, "{}", report["counts"]);
    // The platform loses it: missing, and the repair sends it.
    let r = env
        .http
        .delete(format!(
            "{}/admin/records/{}",
            env.platform.url(),
            silent
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (_, report) = env.reconcile_json(TODAY, &[]).await;
    let rows = rows_for(&report, &silent);
    let categories: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert!(
        categories.contains(&"missing") && !categories.contains(&"rejected"),
        "{rows:?}"
    );
    let (out, report) = env.reconcile_json(TODAY, &["--repair"]).await;
    assert_eq!(
        report["repair"]["repushed"], 1,
        "{} {out:?}",
        report["repair"]
    );
    assert_eq!(env.platform_records().await[&silent].1, "public");
    let store = read_store(&env.store_path());
    assert_eq!(store.quarantine_len(), 0);
    let e = store.ledger_get(&silent).unwrap().unwrap();
    assert_eq!((e.state, e.rejected_digest), (PlatformState::Public, None));
}

/// Entries without a copy (given up after nine receipts that answered nothing) retried while the feed cannot say
/// whether it still serves their versions (a look-up answered with an empty page that says it has more): kept,
/// nothing sent, nothing removed; once the feed answers, the retry sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_without_a_copy_stay_when_the_feed_cannot_say() {
    let env = spawn_records(4).await;
    let (expected, _) = expected_public(&env.gen, today());
    given_up_through_receipts_that_answer_nothing(&env).await;
    let held = read_store(&env.store_path()).quarantine_len();
    assert_eq!(held as usize, expected.len());
    let hollow = hollow_lookups(&env).await;
    let exchanged = env.platform_stats().await["flows"].as_u64().unwrap();
    let (out, err) = env.retry_reading(&hollow).await;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not say"), "{err}");
    assert!(
        !err.contains("no longer in the enforcement system"),
        "{err}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), held);
    assert_eq!(
        env.platform_stats().await["flows"].as_u64(),
        Some(exchanged),
        "nothing sent"
    );
    let out = env.dualpub(&["quarantine", "retry"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// After a first sync, a published penalty and its source record with the display period extended by two years (not
/// yet in the feed), and the day its published display period ends.
async fn published_penalty_extended(env: &Env) -> (String, serde_json::Value, chrono::NaiveDate) {
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (key, mut v) = published_penalty(env).await;
    let ends = read_store(&env.store_path())
        .ledger_get(&key)
        .unwrap()
        .unwrap()
        .meta
        .display_until
        .unwrap();
    let ends = chrono::NaiveDate::parse_from_str(&ends, "%Y-%m-%d").unwrap();
    v["display_until"] = (ends + chrono::Duration::days(730)).to_string().into();
    (key, v, ends)
}

/// A penalty whose display period ends today, extended at the source just before the run. The run took down every
/// penalty past its display period before it read the feed: it withdrew this one, then read the extension and
/// published it again — a withdrawal the credit platform passes on. The takedowns now come after the feed's
/// receipts, which move the penalty's place in the expiry index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_period_extended_as_it_ends_is_not_withdrawn_first() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, mut v, ends) = published_penalty_extended(&env).await;
    v["updated_at"] = serde_json::Value::Null;
    v["kind"] = "penalty".into();
    env.source_insert_one(v).await;
    let taken_down = Arc::new(Mutex::new(false));
    let (seen, watched) = (taken_down.clone(), key.clone());
    let proxy = platform_proxy(
        env.platform.url(),
        receipt_rewrite(move |r: &mut Receipt| {
            if r.results
                .iter()
                .any(|res| res.key == watched && res.status == ResultStatus::Withdrawn)
            {
                *seen.lock().unwrap() = true;
            }
        }),
    )
    .await;
    let day_after = (ends + chrono::Duration::days(1)).to_string();
    let out = env
        .dualpub_with(
            &["sync", "--json", "--today", &day_after],
            &[("DUALPUB_PLATFORM_URL", proxy.as_str())],
        )
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{s} {out:?}");
    assert!(
        !*taken_down.lock().unwrap(),
        "withdrawn, then published again"
    );
    let held = &env.platform_records().await[&key];
    assert_eq!(held.1, "public");
    // (the mapping may shorten an extension to the longest display period it allows)
    let until = held.2["CF_GSJZQ"].as_str().unwrap().replace('/', "-");
    assert!(until > day_after, "{until}");
}

/// A penalty whose display period has ended, extended at the source alone, the extension's receipts leaving it out
/// three times: the run holds it back in the outbox and, nothing answered, ends with exit 3. Its takedown of ended
/// display periods had queued a withdrawal of the penalty behind the held extension (the ledger still had the old
/// period), so the next run sent the extension, acknowledged this time, and then withdrew it. A held record is now
/// left to the takedown of a later run, which goes by the version the platform acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_period_extended_in_a_held_version_is_not_withdrawn_behind_it() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, v, ends) = published_penalty_extended(&env).await;
    env.source_insert_one(remarked(v, "penalty", "延长公示"))
        .await;
    let proxy = leaving_out_times(&env, &key, 3).await;
    let day_after = (ends + chrono::Duration::days(1)).to_string();
    let sync = || async {
        let out = env
            .dualpub_with(
                &["sync", "--json", "--today", &day_after],
                &[("DUALPUB_PLATFORM_URL", proxy.as_str())],
            )
            .await;
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.code(), s, out)
    };
    let (code, s, out) = sync().await;
    assert_eq!(code, Some(3), "{s} {out:?}");
    let store = read_store(&env.store_path());
    assert_eq!(outbox_keys(&store), HashSet::from([key.clone()]));
    assert_eq!(store.outbox_len(), 1, "only the extension waits");
    drop(store);
    // The receipts answer for it now: published, and nothing to take down.
    let (code, s, out) = sync().await;
    assert_eq!(code, Some(0), "{s} {out:?}");
    assert_eq!(s["withdrawn"], 0, "{s}");
    let held = &env.platform_records().await[&key];
    assert_eq!(held.1, "public", "{held:?}");
    assert_eq!(held.2["BZ"], "延长公示", "{held:?}");
}

/// A penalty whose display period has ended, extended at the source, and another penalty changed just before it whose
/// message a gateway refuses (HTTP 403, a firewall that takes a record's text for an attack): the run stopped at that
/// refusal with the extension's message written to the outbox but not yet sent, and then took down the penalties
/// past their display period by the ledger's old periods — the extended one among them, before its extension (a
/// withdrawal overtaking the earlier message for its key). The platform withdrew a penalty whose latest version is to
/// stay public, until some later run got the extension through. A key with a message in the outbox is now left to
/// the takedown of a later run, which goes by what the platform acknowledged by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_period_extended_in_a_message_not_yet_sent_is_not_withdrawn_before_it() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // The penalty whose display period ends first (`key`), and one that ends later (`blocked`), whose own takedown
    // does not come into it.
    let held = env.platform_records().await;
    let store = read_store(&env.store_path());
    let mut published: Vec<(String, String, String)> = Vec::new();
    for i in 0..env.gen.count(Kind::Penalty) {
        let r = dualpub::sim::gen::record(&env.gen, Kind::Penalty, i);
        let doc = r.doc_no.as_deref().unwrap_or("").trim().to_string();
        let key = held.iter().find_map(|(k, v)| {
            (k.starts_with("XZCF") && k.ends_with(&format!(":{doc}")) && v.1 == "public")
                .then(|| k.clone())
        });
        if let Some(key) = key {
            let until = store
                .ledger_get(&key)
                .unwrap()
                .unwrap()
                .meta
                .display_until
                .unwrap();
            published.push((until, key, r.id.clone()));
        }
    }
    drop(store);
    published.sort();
    let (ends, key, id) = published[0].clone();
    let (_, blocked, blocked_id) = published
        .iter()
        .find(|(until, _, _)| *until > ends)
        .cloned()
        .expect("a penalty whose display period ends later");
    let ends = chrono::NaiveDate::parse_from_str(&ends, "%Y-%m-%d").unwrap();
    // The blocked one changes first, then the extension: one page, the blocked message before the extension's.
    let b = env.source_record(&blocked_id).await;
    env.source_insert_one(remarked(b, "penalty", "被网关拦截"))
        .await;
    let mut v = env.source_record(&id).await;
    v["display_until"] = (ends + chrono::Duration::days(730)).to_string().into();
    env.source_insert_one(remarked(v, "penalty", "延长公示"))
        .await;
    let taken_down = Arc::new(Mutex::new(false));
    let (seen, watched) = (taken_down.clone(), key.clone());
    let gateway = platform_proxy(
        env.platform.url(),
        Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
            if path != "/api/exchange" || status != 200 {
                return (status, body);
            }
            let receipt = dualpub::xml::read_receipt(&body).unwrap();
            if receipt.results.iter().any(|r| r.key == blocked) {
                let refusal = r#"<Error code="FORBIDDEN" message="request blocked"/>"#;
                return (403, refusal.as_bytes().to_vec());
            }
            if receipt
                .results
                .iter()
                .any(|r| r.key == watched && r.status == ResultStatus::Withdrawn)
            {
                *seen.lock().unwrap() = true;
            }
            (status, body)
        }),
    )
    .await;
    let day_after = (ends + chrono::Duration::days(1)).to_string();
    let one_at_a_time = [
        ("DUALPUB_PLATFORM_URL", gateway.as_str()),
        ("DUALPUB_PLATFORM_BATCH_SIZE", "1"),
        ("DUALPUB_PLATFORM_CONCURRENCY", "1"),
    ];
    let out = env
        .dualpub_with(&["sync", "--json", "--today", &day_after], &one_at_a_time)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(3), "{s} {out:?}");
    assert!(
        !*taken_down.lock().unwrap(),
        "withdrawn before its extension was sent: {s}"
    );
    assert_eq!(env.platform_records().await[&key].1, "public");
    assert!(outbox_keys(&read_store(&env.store_path())).contains(&key));
    // The gateway lets it through now: the extension goes out, and nothing is taken down.
    let out = env
        .dualpub_with(
            &["sync", "--json", "--today", &day_after],
            &[("DUALPUB_PLATFORM_BATCH_SIZE", "1")],
        )
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{s} {out:?}");
    let held = &env.platform_records().await[&key];
    assert_eq!(held.1, "public", "{held:?}");
    assert_eq!(held.2["BZ"], "延长公示", "{held:?}");
}

/// The first generated permit changes at the source (its remarks become `许可证补正`).
async fn permit_corrected(env: &Env) {
    let permit_id = dualpub::sim::gen::record(&env.gen, Kind::Permit, 0).id;
    let permit = env.source_record(&permit_id).await;
    env.source_insert_one(remarked(permit, "permit", "许可证补正"))
        .await;
}

/// A new version of `v` (a source record as the simulator serves it) with these remarks, stamped now.
fn remarked(mut v: serde_json::Value, kind: &str, remarks: &str) -> serde_json::Value {
    v["remarks"] = remarks.into();
    v["updated_at"] = serde_json::Value::Null;
    v["kind"] = kind.into();
    v
}

/// A penalty changed alone, whose new version the platform's receipts never answer for: its message held only it,
/// so its run saw no answer to anything and kept it in the outbox (exit 3). The next run sent it first and stopped on
/// it again, and the one after: three runs, each on exit 3, in which no other record moved. Now the next run holds it
/// back and sends the other records; the platform answers those, so the held record is given up on in the same run
/// (exit 1, `NO_RESULT`). A later version of it, read meanwhile, waits behind it in the outbox and is sent after it,
/// never before (the platform ends up with the latest version), and is given up on in its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_record_never_answered_for_does_not_hold_the_next_run_up() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (key, v) = published_penalty(&env).await;
    let id = v["id"].as_str().unwrap().to_string();
    env.source_insert_one(remarked(v.clone(), "penalty", "第二版"))
        .await;
    let proxy = leaving_out(&env, &key).await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(
        code, 3,
        "alone, nothing says the fault is its own: {s} {err}"
    );
    assert_eq!(read_store(&env.store_path()).outbox_len(), 1);
    // Meanwhile a permit changes, and the penalty again.
    permit_corrected(&env).await;
    env.source_insert_one(remarked(v, "penalty", "第三版"))
        .await;
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["accepted"], 1, "the permit: {s}");
    assert_eq!(
        s["rejected"], 2,
        "the penalty's two versions, given up on: {s}"
    );
    // The held version, the permit and the version that waited: each sent once by the engine (its resends within a
    // message's sending, and the held one's at the end of the run, are not records pushed again).
    assert_eq!(s["pushed"], 3, "{s}");
    assert_eq!(s["outbox_resent"], 1, "{s}");
    let held = env.platform_records().await;
    let permit_doc = dualpub::sim::gen::record(&env.gen, Kind::Permit, 0)
        .doc_no
        .unwrap();
    let permit_row = held
        .iter()
        .find(|(k, _)| k.starts_with("XZXK") && k.ends_with(permit_doc.trim()))
        .unwrap();
    assert_eq!(permit_row.1 .2["BZ"], "许可证补正", "{permit_row:?}");
    assert_eq!(held[&key].2["BZ"], "第三版", "{:?}", held[&key]);
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0);
    let q = store.quarantine_get(Kind::Penalty, &id).unwrap().unwrap();
    assert_eq!(
        (q.reason.as_str(), q.findings[0].code.as_str()),
        ("rejected", "NO_RESULT")
    );
    assert_eq!(q.source["remarks"], "第三版", "{:?}", q.source);
}

/// A gateway that answers HTTP 400 (`BAD_ENVELOPE`) to every message the platform's receipt shows held one of
/// `keys` — a platform whose parser chokes on that record — or, with no keys, to every message (an envelope it
/// refuses: a wrong `[platform] receiver`, say).
async fn refusing_messages_with(env: &Env, keys: Vec<String>) -> String {
    refusing_messages_where(env, move |key| {
        keys.is_empty() || keys.iter().any(|k| k == key)
    })
    .await
}

/// A gateway that answers HTTP 400 to every message the platform's receipt shows held a key `refused` picks, and
/// passes every other answer on.
async fn refusing_messages_where(
    env: &Env,
    refused: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> String {
    platform_proxy(
        env.platform.url(),
        Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
            if path != "/api/exchange" || status != 200 {
                return (status, body);
            }
            let receipt = dualpub::xml::read_receipt(&body).unwrap();
            if receipt.results.iter().any(|r| refused(&r.key)) {
                let refusal =
                    r#"<Error code="BAD_ENVELOPE" message="报文格式错误 (message malformed)"/>"#;
                return (400, refusal.as_bytes().to_vec());
            }
            (status, body)
        }),
    )
    .await
}

/// A message the platform refuses as malformed (HTTP 400) because of one of its records stopped every run with exit 3
/// at that message, for good: no record after it moved. Now, once the platform has accepted other messages with the
/// same envelope (sender, receiver, item: so the envelope is fine), the message is sent in halves down to the record
/// it refuses alone, which is rejected (`MESSAGE_REFUSED`, in quarantine with the platform's words); every other
/// record is published, and the next run has nothing to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_as_malformed_for_one_record_costs_only_that_record() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (expected, _) = expected_public(&env.gen, today());
    let poison = expected
        .keys()
        .find(|k| k.starts_with("XZCF"))
        .unwrap()
        .clone();
    let proxy = refusing_messages_with(&env, vec![poison.clone()]).await;
    // Messages of four records: the platform takes other penalty messages (the envelope it refuses is fine).
    let via_proxy = [
        ("DUALPUB_PLATFORM_URL", proxy.as_str()),
        ("DUALPUB_PLATFORM_BATCH_SIZE", "4"),
    ];
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["rejected"], 1, "{s}");
    for (key, state) in ledger_states(&env) {
        let want = if key == poison {
            PlatformState::Rejected
        } else {
            PlatformState::Public
        };
        assert_eq!(state, Some(want), "{key}");
    }
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.outbox_len(), 0);
        let held: Vec<_> = store.quarantine_iter().map(Result::unwrap).collect();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].key.as_deref(), Some(poison.as_str()));
        let f = &held[0].findings[0];
        assert_eq!(f.code, "MESSAGE_REFUSED");
        assert!(
            f.en.contains("HTTP 400") && f.en.contains("报文格式错误"),
            "{f:?}"
        );
    }
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["pushed"], 0, "{s}");
}

/// A platform that refuses every message as malformed: the fault is the envelope (our configuration), which no
/// smaller message mends, so no record is quarantined for it. The run stops with exit 3 after two messages, naming
/// the keys to check, and keeps everything in the outbox, run after run; mended, the next run sends it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_all_refused_as_malformed_quarantine_nothing() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (expected, _) = expected_public(&env.gen, today());
    let proxy = refusing_messages_with(&env, Vec::new()).await;
    for _ in 0..4 {
        let (code, s, err) = env
            .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
            .await;
        assert_eq!(code, 3, "{s} {err}");
        assert!(
            err.contains("HTTP 400") && err.contains("[platform] receiver"),
            "{err}"
        );
        assert_eq!(
            (&s["rejected"], &s["quarantined"]),
            (&0.into(), &0.into()),
            "{s}"
        );
        let store = read_store(&env.store_path());
        assert_eq!(store.quarantine_len(), 0);
        let keys = outbox_keys(&store);
        assert_eq!(keys, expected.keys().cloned().collect());
    }
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).outbox_len(), 0);
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// Three penalties the platform holds as public (their keys), and their source records as the simulator serves them.
async fn three_published_penalties(env: &Env) -> [(String, serde_json::Value); 3] {
    let held = env.platform_records().await;
    let mut found = Vec::new();
    for i in 0..env.gen.count(Kind::Penalty) {
        let r = dualpub::sim::gen::record(&env.gen, Kind::Penalty, i);
        let doc = r.doc_no.as_deref().unwrap_or("").trim().to_string();
        if let Some(key) = held.iter().find_map(|(k, v)| {
            (k.starts_with("XZCF") && k.ends_with(&format!(":{doc}")) && v.1 == "public")
                .then(|| k.clone())
        }) {
            found.push((key, env.source_record(&r.id).await));
        }
        if found.len() == 3 {
            return found.try_into().unwrap();
        }
    }
    panic!("fewer than three published penalties")
}

/// Two records, each changed alone in a run of its own, whose messages the platform refuses as malformed: each run
/// held its message and ended with exit 3 (nothing else answered). The next run sent both first, from the outbox,
/// and stopped at the second held before reading the feed: no other record ever moved again, however many changed,
/// and the two were never split out. Batches an earlier run left in the outbox do not stop the run so; the feed is
/// read, the platform answers its records (a permit, and a third penalty: a message of the same envelope), and the
/// two are then found and rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_malformed_messages_left_by_earlier_runs_do_not_stop_every_later_run() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let [(k1, v1), (k2, v2), (_, v3)] = three_published_penalties(&env).await;
    let proxy = refusing_messages_with(&env, vec![k1.clone(), k2.clone()]).await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    env.source_insert_one(remarked(v1, "penalty", "第二版"))
        .await;
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 3, "{s} {err}");
    env.source_insert_one(remarked(v2, "penalty", "第二版"))
        .await;
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 3, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).outbox_len(), 2);
    // Meanwhile a permit changes, and another penalty.
    permit_corrected(&env).await;
    env.source_insert_one(remarked(v3, "penalty", "第二版"))
        .await;
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["accepted"], 2, "the permit and the third penalty: {s}");
    assert_eq!(s["rejected"], 2, "the two penalties, refused alone: {s}");
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0);
    for key in [&k1, &k2] {
        let entry = store.ledger_get(key).unwrap().unwrap();
        assert!(entry.rejected_digest.is_some(), "{key}");
    }
}

/// A platform that refuses as malformed every message of one item — penalties (`XZCF`) from this sender, say, for
/// which it has no registration — and takes the permits: the envelope is at fault, not the records. Once the permits
/// were answered, every penalty message was split down to single records and every penalty went to quarantine as
/// `MESSAGE_REFUSED`, rejected content that no later sync sends again. Now only a message whose envelope (sender,
/// receiver, item) the platform has taken in the run is split; the penalties stay in the outbox (exit 3), and go out
/// once the platform takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_an_item_the_platform_refuses_whole_quarantine_nothing() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (expected, _) = expected_public(&env.gen, today());
    let proxy = refusing_penalties(&env).await;
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 3, "{s} {err}");
    assert!(err.contains("HTTP 400"), "{err}");
    assert_eq!(
        (&s["rejected"], &s["quarantined"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.quarantine_len(), 0);
        let waiting = outbox_keys(&store);
        let penalties: HashSet<String> = expected
            .keys()
            .filter(|k| k.starts_with("XZCF"))
            .cloned()
            .collect();
        assert_eq!(waiting, penalties);
    }
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).outbox_len(), 0);
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// A revoked penalty whose withdrawal the platform never answers, held in the outbox, and meanwhile revoked again in
/// a version that fails validation: the newer version's withdrawal goes out behind the held one (the duplicate
/// check is by version, so only a re-read of the same version is skipped) and is given up on in its turn, so the
/// ledger remembers the newest version's withdrawal, not the one it replaced, and the hourly offer sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_version_revoked_again_behind_a_held_withdrawal_is_withdrawn_in_its_turn() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, id) = revoke_published_penalty(&env, false).await;
    let proxy = leaving_out(&env, &key).await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 3, "{s} {err}");
    let mut v3 = env.source_record(&id).await;
    v3["remarks"] = "\u{1}决定已撤销（补正）".into();
    v3["updated_at"] = serde_json::Value::Null;
    v3["kind"] = "penalty".into();
    env.source_insert_one(v3).await;
    permit_corrected(&env).await;
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["rejected"], 2, "both withdrawals, given up: {s}");
    let v3_at = env.source_record(&id).await["updated_at"]
        .as_str()
        .unwrap()
        .to_string();
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0);
    let e = store.ledger_get(&key).unwrap().unwrap();
    assert!(
        e.rejected_digest
            .as_deref()
            .is_some_and(|d| d.ends_with(&v3_at)),
        "{:?} {v3_at}",
        e.rejected_digest
    );
    // Its entry is the newer version's, given up for want of an answer: offered again an hour later.
    let q = store.quarantine_get(Kind::Penalty, &id).unwrap().unwrap();
    assert_eq!(
        (q.findings[0].code.as_str(), q.source_updated_at.as_deref()),
        ("NO_RESULT", Some(v3_at.as_str())),
        "{q:?}"
    );
}

/// A wrong `[platform] receiver`: the platform refuses every message whole (HTTP 400), and nothing is quarantined for
/// it (exit 3, everything kept in the outbox). The operator mends the code. The batches left in the outbox still
/// carried the wrong one, so the platform refused them run after run, and every run ended with exit 3 however the
/// configuration was mended. Now they are addressed anew, keeping their flow ids, and the platform takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_addressed_to_a_wrong_receiver_go_out_once_it_is_mended() {
    let env = spawn_with(
        gen_cfg(),
        dualpub::sim::platform::PlatformSimConfig {
            receiver: Some("HNCREDIT".into()),
            ..Default::default()
        },
        "",
    )
    .await;
    let (expected, _) = expected_public(&env.gen, today());
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_RECEIVER", "HNCREDlT")])
        .await;
    assert_eq!(code, 3, "{s} {err}");
    assert!(
        err.contains("HNCREDlT") && err.contains("[platform] receiver"),
        "{err}"
    );
    let store = read_store(&env.store_path());
    assert_eq!(store.quarantine_len(), 0);
    let left: usize = store
        .outbox()
        .unwrap()
        .iter()
        .map(|(_, b)| b.items.len())
        .sum();
    assert!(left > 0);
    drop(store);
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["outbox_resent"], left, "{s}");
    assert_eq!(read_store(&env.store_path()).outbox_len(), 0);
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// The outbox is empty, and penalty `id` is in quarantine as refused alone (`MESSAGE_REFUSED`).
fn refused_alone_and_outbox_empty(env: &Env, id: &str) {
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0);
    let q = store.quarantine_get(Kind::Penalty, id).unwrap().unwrap();
    assert_eq!(q.findings[0].code, "MESSAGE_REFUSED", "{q:?}");
}

/// After a first sync, two penalties the platform holds as public change together: the key and source id of the
/// first.
async fn two_published_penalties_changed(env: &Env) -> (String, String) {
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (key, v) = published_penalty(env).await;
    let id = v["id"].as_str().unwrap().to_string();
    env.source_insert_one(remarked(v, "penalty", "第二版"))
        .await;
    let public = public_of(&env.platform_records().await);
    let other = (0..env.gen.count(Kind::Penalty))
        .map(|i| dualpub::sim::gen::record(&env.gen, Kind::Penalty, i))
        .find(|r| {
            let doc = r.doc_no.as_deref().unwrap_or("").trim().to_string();
            r.id != id
                && public
                    .keys()
                    .any(|k| k.starts_with("XZCF") && k.ends_with(&format!(":{doc}")))
        })
        .unwrap();
    let other = env.source_record(&other.id).await;
    env.source_insert_one(remarked(other, "penalty", "补正"))
        .await;
    (key, id)
}

/// Two penalties changed together, one of which the platform's parser chokes on: their message is refused as
/// malformed (HTTP 400), and no other message of that item is sent in the run to show the envelope is fine, so the run
/// ended with exit 3, and so did every later one until some other penalty changed. Now the message is split once to
/// tell: the half without the bad record is taken, which proves the envelope, and the bad record alone is rejected
/// (`MESSAGE_REFUSED`) in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_with_no_other_of_its_item_is_split_once_to_tell() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, id) = two_published_penalties_changed(&env).await;
    let proxy = refusing_messages_with(&env, vec![key.clone()]).await;
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 1, "{s} {err}");
    // The other penalty is taken (`platform_unchanged`: the gateway refused the first message after the platform
    // had stored it), the bad one rejected.
    assert_eq!(
        (&s["platform_unchanged"], &s["rejected"]),
        (&1.into(), &1.into()),
        "{s}"
    );
    refused_alone_and_outbox_empty(&env, &id);
}

/// A gateway that answers a message with the status and error `refuse` gives for the platform's receipt of it, and
/// once a message it passed on was taken, answers every later one 503 (out of service); its URL.
async fn down_once_one_is_taken(
    env: &Env,
    refuse: impl Fn(&Receipt) -> Option<(u16, &'static str)> + Send + Sync + 'static,
) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    let taken = AtomicBool::new(false);
    platform_proxy(
        env.platform.url(),
        Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
            if path != "/api/exchange" || status != 200 {
                return (status, body);
            }
            if taken.load(Ordering::SeqCst) {
                let down = r#"<Error code="UNAVAILABLE" message="维护中 (maintenance)"/>"#;
                return (503, down.as_bytes().to_vec());
            }
            if let Some((code, error)) = refuse(&dualpub::xml::read_receipt(&body).unwrap()) {
                return (code, error.as_bytes().to_vec());
            }
            taken.store(true, Ordering::SeqCst);
            (status, body)
        }),
    )
    .await
}

/// Two penalties changed together, one of which the platform refuses as malformed (HTTP 400): their message is split
/// once unproven, and the half without the bad record is taken, which proves the envelope. Then the platform is out of
/// service (HTTP 503) for the rest of the run, which ends with exit 3 before the bad record is split out. The proof
/// lived only in that run: the next run found the bad record's piece unproven, held it for want of another message
/// of its item, and so did every later run (exit 3) until some other penalty changed. Now the pieces left in the
/// outbox remember the proof their sibling gave, and the next run rejects the bad record (`MESSAGE_REFUSED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_a_half_gave_before_the_run_broke_off_holds_in_the_next_run() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let (key, id) = two_published_penalties_changed(&env).await;
    // Messages with `key` refused as malformed; once a message without it was taken, out of service.
    let bad = key.clone();
    let proxy = down_once_one_is_taken(&env, move |receipt| {
        receipt.results.iter().any(|r| r.key == bad).then_some((
            400,
            r#"<Error code="BAD_RECORD" message="报文格式错误 (message malformed)"/>"#,
        ))
    })
    .await;
    let broken = [
        ("DUALPUB_PLATFORM_URL", proxy.as_str()),
        ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "2"),
    ];
    let (code, s, err) = env.sync_with(&broken).await;
    assert_eq!(code, 3, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).outbox_len(), 1, "{err}");
    // The platform is back; it still refuses the bad record. No other penalty changes.
    let proxy = refusing_messages_with(&env, vec![key.clone()]).await;
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["rejected"], 1, "{s}");
    refused_alone_and_outbox_empty(&env, &id);
}

/// Two penalties changed together, their message refused as too large (HTTP 413): sent in halves, the first half
/// taken, then the platform out of service (HTTP 503) until the retry budget was spent (exit 3). The first half was
/// in the ledger and out of the outbox, but the run's summary counted it nowhere: a send task that failed lost the
/// counts of the pieces it had settled. Now they are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_between_two_halves_of_a_message_counts_the_half_taken() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    two_published_penalties_changed(&env).await;
    let proxy = down_once_one_is_taken(&env, |receipt| {
        (receipt.results.len() > 1).then_some((
            413,
            r#"<Error code="TOO_LARGE" message="报文过大 (message too large)"/>"#,
        ))
    })
    .await;
    let (code, s, err) = env
        .sync_with(&[
            ("DUALPUB_PLATFORM_URL", proxy.as_str()),
            ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "2"),
        ])
        .await;
    assert_eq!(code, 3, "{s} {err}");
    // (the gateway refused the whole message after the platform had stored it: the half is `platform_unchanged`)
    assert_eq!(
        (&s["pushed"], &s["platform_unchanged"]),
        (&2.into(), &1.into()),
        "{s}"
    );
    assert_eq!(outbox_keys(&read_store(&env.store_path())).len(), 1);
}

/// A wrong `[agency] credit_code`: the platform refuses every message (HTTP 400), and the run keeps them in the
/// outbox (exit 3). The operator mends the code, but the messages left in the outbox were built for the old sender,
/// which is part of every record's key, so they cannot be addressed anew; the platform refuses them run after run,
/// and the error said to check `[agency] credit_code` — right by then. Now it names both codes and says what to do;
/// and what the platform may once have taken from the old sender does not get these records split and quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_built_for_a_sender_since_mended_say_what_to_do() {
    let env = spawn(gen_cfg(), Faults::default()).await;
    let proxy = refusing_messages_with(&env, Vec::new()).await;
    let wrong = "11410300000012343Y";
    let (code, s, err) = env
        .sync_with(&[
            ("DUALPUB_PLATFORM_URL", proxy.as_str()),
            ("DUALPUB_AGENCY_CREDIT_CODE", wrong),
        ])
        .await;
    assert_eq!(code, 3, "{s} {err}");
    assert!(!err.contains("move the store aside"), "{err}");
    // As if the platform had once taken a message from the old sender while these were split: that proves nothing
    // for a sender since mended, and no record is quarantined for it.
    {
        let store = read_store(&env.store_path());
        for (seq, b) in store.outbox().unwrap() {
            let proven = dualpub::store::OutboxBatch {
                envelope_proven: true,
                ..b
            };
            store.outbox_split(&seq, &[(seq.clone(), proven)]).unwrap();
        }
        store.flush().unwrap();
    }
    let (code, s, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_URL", proxy.as_str())])
        .await;
    assert_eq!(code, 3, "{s} {err}");
    assert!(
        err.contains(&format!("built for sender {wrong}"))
            && err.contains(&format!("is {} now", agency_code()))
            && err.contains("move the store aside"),
        "{err}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
}

/// A gateway that answers HTTP 400 to every message of penalties (the platform does not take them from this sender)
/// and passes permits on.
async fn refusing_penalties(env: &Env) -> String {
    refusing_messages_where(env, |key| key.starts_with("XZCF")).await
}

/// A platform that takes permits and refuses every penalty message: each is held with its records in memory until
/// the end of the run, so a large backfill held them all (every penalty of a million-record store). Now a run holds
/// at most a few: it stops (exit 3) after 16, and the next run goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_holds_a_bounded_number_of_messages() {
    let env = spawn_records(300).await;
    let (expected, _) = expected_public(&env.gen, today());
    let penalties = expected.keys().filter(|k| k.starts_with("XZCF")).count();
    assert!(penalties > 30, "{penalties}");
    let proxy = refusing_penalties(&env).await;
    let vars = [
        ("DUALPUB_PLATFORM_URL", proxy.as_str()),
        ("DUALPUB_PLATFORM_BATCH_SIZE", "1"),
    ];
    let (code, s, err) = env.sync_with(&vars).await;
    assert_eq!(code, 3, "{s} {err}");
    assert!(err.contains("messages held in this run"), "{err}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
    // The permits are taken; of the penalties, only the messages held before the run stopped (and those already on
    // their way) were sent: the rest wait in the outbox, unsent.
    let held = s["pushed"].as_u64().unwrap() - s["accepted"].as_u64().unwrap();
    assert!(
        held > 16 && held <= 16 + 5,
        "{held} of {penalties} penalties sent: {s}"
    );
    // Mended, the next run sends them all.
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).outbox_len(), 0);
    assert_eq!(public_of(&env.platform_records().await), expected);
}
