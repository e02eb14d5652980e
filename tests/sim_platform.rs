//! The credit-platform simulator over real loopback HTTP: login, exchange outcomes and idempotency, validation and
//! the strict profile, size limits, every injected fault, record paging, and the admin API.

use dualpub::mapping::{DisplayPolicy, Domain, MappingContext, MappingSet};
use dualpub::model::{Kind, PlatformRecord};
use dualpub::sim::platform::{
    serve, sign, Faults, PlatformSimConfig, PlatformSimHandle, Stats, StrictProfile,
    MAX_MESSAGE_BYTES,
};
use dualpub::source_schema::SourceRecord;
use dualpub::xml::{
    self, ExchangeMessage, MessageOp, MessageRecord, PublicStatus, Receipt, RecordPage,
    ResultStatus, TokenRequest,
};
use reqwest::StatusCode;
use serde::Deserialize;
use std::time::Duration;
use tokio::net::TcpListener;

const SENDER: &str = "11410000000012343F";

async fn start(cfg: PlatformSimConfig) -> PlatformSimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(listener, cfg).await.unwrap()
}

async fn start_default() -> PlatformSimHandle {
    start(PlatformSimConfig::default()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The organisation permit of `fixtures/cases/permit_org.json` with document number ending in `n`, mapped.
fn permit(n: u32) -> (String, PlatformRecord) {
    #[derive(Deserialize)]
    struct Case {
        records: Vec<SourceRecord>,
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/cases/permit_org.json"
    ))
    .unwrap();
    let case: Case = serde_json::from_str(&text).unwrap();
    let mut src = case.records.into_iter().next().unwrap();
    src.doc_no = Some(format!("（豫）WH安许证字〔2024〕{n:06}"));
    let ctx = MappingContext {
        agency_name: Some("河南省应急管理厅".into()),
        agency_credit_code: Some(SENDER.into()),
        display: DisplayPolicy::for_domain(Domain::WorkSafety, None),
        today: None,
    };
    let mapped = MappingSet::builtin().permit.map(&ctx, &src);
    assert!(mapped.is_valid(), "{:?}", mapped.findings);
    (mapped.key.unwrap().as_str().to_string(), mapped.record)
}

fn upsert((key, rec): (String, PlatformRecord)) -> MessageRecord {
    MessageRecord {
        key,
        op: MessageOp::Upsert(rec),
    }
}

fn withdraw(key: &str) -> MessageRecord {
    MessageRecord {
        key: key.to_string(),
        op: MessageOp::Withdraw,
    }
}

fn message(flow: &str, records: Vec<MessageRecord>) -> Vec<u8> {
    let msg = ExchangeMessage {
        sender: SENDER.into(),
        receiver: "HNCREDIT".into(),
        flow: flow.into(),
        kind: Kind::Permit,
        send_time: chrono::Utc::now().to_rfc3339(),
        records,
    };
    let mut out = Vec::new();
    xml::write_exchange_message(&msg, &mut out);
    out
}

fn token_request(app_key: &str, secret: &str, timestamp: &str) -> Vec<u8> {
    let mut out = Vec::new();
    xml::write_token_request(
        &TokenRequest {
            app_key: app_key.into(),
            timestamp: timestamp.into(),
            sign: sign(secret, app_key, timestamp),
        },
        &mut out,
    );
    out
}

async fn post_token(
    c: &reqwest::Client,
    sim: &PlatformSimHandle,
    body: Vec<u8>,
) -> reqwest::Response {
    c.post(format!("{}/api/token", sim.url()))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn login(c: &reqwest::Client, sim: &PlatformSimHandle) -> String {
    let now = chrono::Utc::now().to_rfc3339();
    let res = post_token(c, sim, token_request("demo-app", "demo-secret", &now)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let t = xml::read_token_response(&res.bytes().await.unwrap()).unwrap();
    assert!(!t.token.is_empty());
    t.token
}

async fn post_exchange(
    c: &reqwest::Client,
    sim: &PlatformSimHandle,
    token: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{}/api/exchange", sim.url()))
        .header("X-Token", token)
        .body(body)
        .send()
        .await
}

/// Sends a message that must be answered 200 and returns the receipt with its bytes.
async fn exchange(
    c: &reqwest::Client,
    sim: &PlatformSimHandle,
    token: &str,
    body: Vec<u8>,
) -> (Receipt, Vec<u8>) {
    let res = post_exchange(c, sim, token, body).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = res.bytes().await.unwrap().to_vec();
    (xml::read_receipt(&bytes).unwrap(), bytes)
}

/// An `<Error>` answer: its status and code.
async fn error_of(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body = res.bytes().await.unwrap();
    let e = xml::read_error_doc(&body)
        .unwrap_or_else(|e| panic!("not an <Error>: {e}: {}", String::from_utf8_lossy(&body)));
    (status, e.code)
}

async fn page(
    c: &reqwest::Client,
    sim: &PlatformSimHandle,
    token: &str,
    query: &[(&str, &str)],
) -> RecordPage {
    let res = c
        .get(format!("{}/api/records", sim.url()))
        .header("X-Token", token)
        .query(query)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    xml::read_record_page(&res.bytes().await.unwrap()).unwrap()
}

async fn admin_stats(c: &reqwest::Client, sim: &PlatformSimHandle) -> Stats {
    c.get(format!("{}/admin/stats", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[derive(Debug, Deserialize)]
struct AdminRecord {
    key: String,
    digest: String,
    status: String,
    published_at: String,
    versions: u32,
    fields: std::collections::BTreeMap<String, String>,
}

async fn admin_records(c: &reqwest::Client, sim: &PlatformSimHandle) -> Vec<AdminRecord> {
    let text = c
        .get(format!("{}/admin/records", sim.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn set_faults(c: &reqwest::Client, sim: &PlatformSimHandle, patch: serde_json::Value) {
    let res = c
        .post(format!("{}/admin/faults", sim.url()))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
}

fn statuses(r: &Receipt) -> Vec<ResultStatus> {
    r.results.iter().map(|x| x.status).collect()
}

// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_checks_app_key_sign_and_clock() {
    let sim = start_default().await;
    let c = client();
    login(&c, &sim).await;
    // Epoch seconds are accepted too.
    let epoch = chrono::Utc::now().timestamp().to_string();
    let res = post_token(&c, &sim, token_request("demo-app", "demo-secret", &epoch)).await;
    assert_eq!(res.status(), StatusCode::OK);

    let now = chrono::Utc::now().to_rfc3339();
    let bad_sign = token_request("demo-app", "wrong-secret", &now);
    let (status, _) = error_of(post_token(&c, &sim, bad_sign).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // DESIGN §3: lowercase hex. The same sign in capitals was taken.
    let mut upper = Vec::new();
    xml::write_token_request(
        &xml::TokenRequest {
            app_key: "demo-app".into(),
            timestamp: now.clone(),
            sign: sign("demo-secret", "demo-app", &now).to_uppercase(),
        },
        &mut upper,
    );
    let (status, _) = error_of(post_token(&c, &sim, upper).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let unknown = token_request("other-app", "demo-secret", &now);
    assert_eq!(
        post_token(&c, &sim, unknown).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let stale = (chrono::Utc::now() - chrono::Duration::minutes(6)).to_rfc3339();
    let (status, _) =
        error_of(post_token(&c, &sim, token_request("demo-app", "demo-secret", &stale)).await)
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let future = (chrono::Utc::now() + chrono::Duration::minutes(6)).to_rfc3339();
    let res = post_token(&c, &sim, token_request("demo-app", "demo-secret", &future)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let (status, code) = error_of(post_token(&c, &sim, b"<TokenRequest>".to_vec()).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "NOT_WELL_FORMED")
    );

    let stats = sim.stats();
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!(stats.unauthorized, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn exchange_and_records_need_a_live_token() {
    let sim = start(PlatformSimConfig {
        faults: Faults {
            token_ttl_secs: 1,
            ..Faults::default()
        },
        ..PlatformSimConfig::default()
    })
    .await;
    let c = client();
    let body = || message("f-auth", vec![upsert(permit(1))]);
    let res = c
        .post(format!("{}/api/exchange", sim.url()))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, StatusCode::UNAUTHORIZED);
    let res = post_exchange(&c, &sim, "made-up", body()).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c
        .get(format!("{}/api/records?item=XZXK", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // A token lives token_ttl_secs; after that the client logs in again.
    let token = login(&c, &sim).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = post_exchange(&c, &sim, &token, body()).await.unwrap();
    assert_eq!(error_of(res).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sim.stats().flows, 0, "a refused call changes nothing");
    let token = login(&c, &sim).await;
    let (receipt, _) = exchange(&c, &sim, &token, body()).await;
    assert_eq!(receipt.accepted, 1);
    assert_eq!(sim.stats().unauthorized, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn upserts_are_accepted_unchanged_or_new_versions_and_flows_replay() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    let (key, rec) = permit(10);

    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message("f1", vec![upsert((key.clone(), rec.clone()))]),
    )
    .await;
    assert_eq!((r.flow.as_str(), r.accepted, r.unchanged), ("f1", 1, 0));
    assert_eq!(r.results[0].key, key);
    assert_eq!(r.results[0].status, ResultStatus::Accepted);

    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message("f2", vec![upsert((key.clone(), rec.clone()))]),
    )
    .await;
    assert_eq!(statuses(&r), [ResultStatus::Unchanged]);
    assert_eq!(r.unchanged, 1);

    let mut changed = rec.clone();
    changed.set("XK_NR", "经营（不带储存设施）：硫酸");
    let new_version = message("f3", vec![upsert((key.clone(), changed.clone()))]);
    let (r, first_bytes) = exchange(&c, &sim, &token, new_version.clone()).await;
    assert_eq!(statuses(&r), [ResultStatus::Accepted]);

    let stored = admin_records(&c, &sim).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key, key);
    assert_eq!(stored[0].versions, 2);
    assert_eq!(stored[0].digest, changed.digest().to_hex());
    assert_eq!(stored[0].fields["XK_NR"], "经营（不带储存设施）：硫酸");

    // The same flow again, even with other content: the first receipt, byte for byte, and nothing changes.
    let (_, again) = exchange(&c, &sim, &token, new_version).await;
    assert_eq!(again, first_bytes);
    let other_content = message("f3", vec![upsert((key.clone(), rec.clone()))]);
    let (_, again) = exchange(&c, &sim, &token, other_content).await;
    assert_eq!(again, first_bytes);
    assert_eq!(
        admin_records(&c, &sim).await[0].digest,
        changed.digest().to_hex()
    );

    let stats = admin_stats(&c, &sim).await;
    assert_eq!(stats.flows, 3);
    assert_eq!(stats.replayed_flows, 2);
    assert_eq!(stats.upserts, 3);
    assert_eq!((stats.accepted, stats.unchanged, stats.rejected), (2, 1, 0));
    assert_eq!((stats.records, stats.public, stats.withdrawn), (1, 1, 0));
    assert_eq!(stats, sim.stats());
    sim.shutdown().await;
}

#[tokio::test]
async fn withdrawals() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    let (key, rec) = permit(20);
    exchange(
        &c,
        &sim,
        &token,
        message("w0", vec![upsert((key.clone(), rec.clone()))]),
    )
    .await;
    let published_at = admin_records(&c, &sim).await[0].published_at.clone();

    let unknown = format!("XZXK:{SENDER}:（豫）WH安许证字〔2024〕999999");
    let other_sender = format!(
        "XZXK:91410100000000000X:{}",
        &key[key.rfind(':').unwrap() + 1..]
    );
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message(
            "w1",
            vec![
                withdraw(&key),
                withdraw(&key),
                withdraw(&unknown),
                withdraw(&other_sender),
            ],
        ),
    )
    .await;
    assert_eq!(
        statuses(&r),
        [
            ResultStatus::Withdrawn,
            ResultStatus::Unchanged,
            ResultStatus::Rejected,
            ResultStatus::Rejected
        ]
    );
    assert_eq!((r.withdrawn, r.unchanged, r.rejected), (1, 1, 2));
    assert_eq!(r.results[2].code, "unknown_key");
    assert_eq!(r.results[2].message, "撤回的记录不存在");
    assert_eq!(r.results[3].code, "unknown_key");

    let stored = &admin_records(&c, &sim).await[0];
    assert_eq!(stored.status, "withdrawn");
    let stats = sim.stats();
    assert_eq!(
        (stats.public, stats.withdrawn, stats.withdrawals),
        (0, 1, 4)
    );

    // Published again: public, and the first publication time is kept.
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message("w2", vec![upsert((key.clone(), rec))]),
    )
    .await;
    assert_eq!(statuses(&r), [ResultStatus::Accepted]);
    let stored = &admin_records(&c, &sim).await[0];
    assert_eq!(stored.status, "public");
    assert_eq!(stored.published_at, published_at);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_records_are_rejected_alone() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    let (bad_key, mut bad) = permit(31);
    bad.set("XK_XDR_SHXYM", "914101004157892343");
    let (other_key, other) = permit(32);
    let wrong_key = format!("XZXK:{SENDER}:另一个文号");
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message(
            "v1",
            vec![
                upsert(permit(30)),
                upsert((bad_key, bad)),
                upsert((wrong_key, other.clone())),
                upsert((other_key, other)),
            ],
        ),
    )
    .await;
    assert_eq!(
        statuses(&r),
        [
            ResultStatus::Accepted,
            ResultStatus::Rejected,
            ResultStatus::Rejected,
            ResultStatus::Accepted
        ]
    );
    assert_eq!(r.results[1].code, "uscc_check");
    assert!(
        r.results[1].message.contains("XK_XDR_SHXYM"),
        "{}",
        r.results[1].message
    );
    assert_eq!(r.results[2].code, "key_mismatch");
    assert_eq!(sim.stats().records, 2);
    assert_eq!(sim.stats().rejected, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_named_other_permit_category_is_taken_and_permit_status_is_a_code() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    let with = |n: u32, field: &str, value: &str| {
        let (key, mut rec) = permit(n);
        rec.set(field, value);
        upsert((key, rec))
    };
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message(
            "other",
            vec![
                with(60, "XK_XKLB", "其他-备案"),
                with(61, "XK_XKLB", "其他"),
                with(62, "XK_XKLB", "其他-"),
                with(63, "XK_ZT", "2"),
                with(64, "XK_ZT", "9"),
            ],
        ),
    )
    .await;
    assert_eq!(
        statuses(&r),
        [
            ResultStatus::Accepted,
            ResultStatus::Rejected,
            ResultStatus::Rejected,
            ResultStatus::Accepted,
            ResultStatus::Rejected
        ]
    );
    assert_eq!(r.results[1].code, "other_unnamed");
    assert_eq!(r.results[2].code, "code_unknown");
    assert_eq!(r.results[4].code, "code_unknown");
    assert!(
        r.results[4].message.contains("XK_ZT"),
        "{}",
        r.results[4].message
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_strict_profile_refuses_parties_and_long_values() {
    let sim = start(PlatformSimConfig {
        strict: Some(StrictProfile {
            max_len: None,
            refused_parties: vec!["河南豫东化工有限公司".into()],
        }),
        ..PlatformSimConfig::default()
    })
    .await;
    let c = client();
    let token = login(&c, &sim).await;
    let (key, mut rec) = permit(40);
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message("s1", vec![upsert((key.clone(), rec.clone()))]),
    )
    .await;
    assert_eq!(statuses(&r), [ResultStatus::Rejected]);
    assert_eq!(r.results[0].code, "party_refused");
    assert!(r.results[0].message.contains("河南豫东化工有限公司"));
    rec.set("XK_XDR_MC", "河南另一化工有限公司");
    let (r, _) = exchange(&c, &sim, &token, message("s2", vec![upsert((key, rec))])).await;
    assert_eq!(statuses(&r), [ResultStatus::Accepted]);
    sim.shutdown().await;

    let sim = start(PlatformSimConfig {
        strict: Some(StrictProfile {
            max_len: Some(12),
            refused_parties: vec![],
        }),
        ..PlatformSimConfig::default()
    })
    .await;
    let token = login(&c, &sim).await;
    let (r, _) = exchange(&c, &sim, &token, message("s3", vec![upsert(permit(41))])).await;
    assert_eq!(r.results[0].code, "too_long");
    assert!(
        r.results[0].message.contains("；"),
        "several fields: {}",
        r.results[0].message
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_messages() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;

    let many: Vec<MessageRecord> = (0..501)
        .map(|i| withdraw(&format!("XZXK:{SENDER}:{i}")))
        .collect();
    let res = post_exchange(&c, &sim, &token, message("big1", many))
        .await
        .unwrap();
    assert_eq!(
        error_of(res).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "TOO_MANY_RECORDS".into())
    );

    let mut huge = message("big2", vec![upsert(permit(50))]);
    huge.resize(MAX_MESSAGE_BYTES + 1, b' ');
    let res = post_exchange(&c, &sim, &token, huge).await.unwrap();
    assert_eq!(
        error_of(res).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE".into())
    );

    // Exactly at the limit is fine (trailing white space after the root element is allowed).
    let mut at_limit = message("big3", vec![upsert(permit(50))]);
    at_limit.resize(MAX_MESSAGE_BYTES, b' ');
    let (r, _) = exchange(&c, &sim, &token, at_limit).await;
    assert_eq!(r.accepted, 1);

    let res = post_exchange(
        &c,
        &sim,
        &token,
        b"<ExchangeMessage version=\"2.0\"><Header>".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        error_of(res).await,
        (StatusCode::BAD_REQUEST, "NOT_WELL_FORMED".into())
    );
    let mut wrong_count = message("bad", vec![upsert(permit(51))]);
    let text = String::from_utf8(wrong_count.clone()).unwrap();
    wrong_count = text
        .replace("<count>1</count>", "<count>2</count>")
        .into_bytes();
    let res = post_exchange(&c, &sim, &token, wrong_count).await.unwrap();
    assert_eq!(
        error_of(res).await,
        (StatusCode::BAD_REQUEST, "BAD_ENVELOPE".into())
    );
    // An empty flow would make every such message a replay of the first; a blank sender owns nothing.
    for (from, to) in [
        ("<flow>empty-flow</flow>", "<flow></flow>"),
        ("<flow>blank-flow</flow>", "<flow>  </flow>"),
        (
            &format!("<sender>{SENDER}</sender>") as &str,
            "<sender> </sender>",
        ),
        ("<receiver>HNCREDIT</receiver>", "<receiver/>"),
    ] {
        let flow = if from.starts_with("<flow>") {
            &from[6..from.len() - 7]
        } else {
            "blank-header"
        };
        let text = String::from_utf8(message(flow, vec![upsert(permit(52))])).unwrap();
        assert!(text.contains(from), "{text}");
        let res = post_exchange(&c, &sim, &token, text.replace(from, to).into_bytes())
            .await
            .unwrap();
        assert_eq!(
            error_of(res).await,
            (StatusCode::BAD_REQUEST, "BAD_ENVELOPE".into()),
            "{to}"
        );
    }
    assert_eq!(sim.stats().flows, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttles_errors_and_resets_come_before_any_work() {
    let sim = start(PlatformSimConfig {
        faults: Faults {
            throttle_rate: 1.0,
            retry_after_secs: 7,
            ..Faults::default()
        },
        ..PlatformSimConfig::default()
    })
    .await;
    let c = client();
    let now = chrono::Utc::now().to_rfc3339();
    let res = post_token(&c, &sim, token_request("demo-app", "demo-secret", &now)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "7");
    let res = post_exchange(
        &c,
        &sim,
        "no-token-needed-to-be-throttled",
        message("t", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(error_of(res).await.0, StatusCode::TOO_MANY_REQUESTS);

    // The command line's names work at run time too.
    let res = c
        .post(format!("{}/admin/faults", sim.url()))
        .json(&serde_json::json!({"retry_after": 3, "token_ttl": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let now_in_force: serde_json::Value = res.json().await.unwrap();
    assert_eq!(now_in_force["retry_after_secs"], 3);
    assert_eq!(now_in_force["token_ttl_secs"], 60);
    assert_eq!(now_in_force["throttle_rate"], 1.0);
    let res = post_token(&c, &sim, token_request("demo-app", "demo-secret", &now)).await;
    assert_eq!(res.headers()["retry-after"], "3");

    set_faults(
        &c,
        &sim,
        serde_json::json!({"throttle_rate": 0.0, "error_rate": 1.0}),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let res = post_token(&c, &sim, token_request("demo-app", "demo-secret", &now)).await;
        seen.insert(error_of(res).await.0.as_u16());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [500, 503]);

    set_faults(
        &c,
        &sim,
        serde_json::json!({"error_rate": 0.0, "reset_rate": 1.0}),
    )
    .await;
    let err = c
        .post(format!("{}/api/token", sim.url()))
        .body(token_request("demo-app", "demo-secret", &now))
        .send()
        .await
        .expect_err("a reset connection gives no HTTP answer");
    assert!(err.status().is_none(), "{err:?}");
    // Admin endpoints never fail.
    let stats = admin_stats(&c, &sim).await;
    assert_eq!(stats.faults.throttles, 3);
    assert_eq!(stats.faults.errors, 20);
    assert!(stats.faults.resets >= 1, "{stats:?}");
    assert_eq!(stats.faults_injected, 23 + stats.faults.resets);
    assert_eq!(stats.tokens_issued, 0);

    set_faults(&c, &sim, serde_json::json!({"reset_rate": 0.0})).await;
    login(&c, &sim).await;
    // A bad rate is refused and changes nothing.
    let res = c
        .post(format!("{}/admin/faults", sim.url()))
        .json(&serde_json::json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    login(&c, &sim).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lost_answer_still_commits_and_the_replay_tells() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    set_faults(&c, &sim, serde_json::json!({"lost_ack_rate": 1.0})).await;
    // The answer is lost either as a 500 or as a reset; try several seeds so both kinds are seen.
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..8u32 {
        set_faults(&c, &sim, serde_json::json!({"seed": i})).await;
        let flow = format!("lost-{i}");
        match post_exchange(
            &c,
            &sim,
            &token,
            message(&flow, vec![upsert(permit(60 + i))]),
        )
        .await
        {
            Ok(res) => {
                assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
                kinds.insert("500");
            }
            Err(e) => {
                assert!(e.status().is_none());
                kinds.insert("reset");
            }
        }
    }
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    let stored = admin_records(&c, &sim).await;
    assert_eq!(
        stored.len(),
        8,
        "committed although the client saw an error"
    );
    assert!(stored.iter().all(|r| r.status == "public"));
    assert_eq!(sim.stats().faults.lost_acks, 8);

    set_faults(&c, &sim, serde_json::json!({"lost_ack_rate": 0.0})).await;
    for i in 0..8u32 {
        let flow = format!("lost-{i}");
        let (r, _) = exchange(
            &c,
            &sim,
            &token,
            message(&flow, vec![upsert(permit(60 + i))]),
        )
        .await;
        assert_eq!(statuses(&r), [ResultStatus::Accepted], "the first receipt");
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.flows, stats.replayed_flows, stats.records),
        (8, 8, 8)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn records_page_in_key_order_with_fields_on_request() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    let records: Vec<(String, PlatformRecord)> = [7, 3, 5, 1, 6, 2, 4].map(permit).into();
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message("p1", records.iter().cloned().map(upsert).collect()),
    )
    .await;
    assert_eq!(r.accepted, 7);
    let (last_key, _) = &records[4];
    exchange(&c, &sim, &token, message("p2", vec![withdraw(last_key)])).await;

    let mut keys: Vec<String> = records.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    let mut seen = Vec::new();
    for p in 1..=3 {
        let pg = page(
            &c,
            &sim,
            &token,
            &[
                ("item", "XZXK"),
                ("sender", SENDER),
                ("page", &p.to_string()),
                ("size", "3"),
            ],
        )
        .await;
        assert_eq!(
            (pg.kind, pg.page, pg.size, pg.total),
            (Kind::Permit, p, 3, 7)
        );
        assert!(pg.records.iter().all(|r| r.fields.is_none()));
        seen.extend(pg.records.into_iter().map(|r| r.key));
    }
    assert_eq!(seen, keys);
    let pg = page(
        &c,
        &sim,
        &token,
        &[("item", "XZXK"), ("page", "4"), ("size", "3")],
    )
    .await;
    assert_eq!((pg.total, pg.records.len()), (7, 0));
    let pg = page(
        &c,
        &sim,
        &token,
        &[("item", "XZXK"), ("sender", "91410100000000000X")],
    )
    .await;
    assert_eq!((pg.total, pg.records.len()), (0, 0));
    let pg = page(&c, &sim, &token, &[("item", "XZCF"), ("sender", SENDER)]).await;
    assert_eq!(pg.total, 0);

    let pg = page(
        &c,
        &sim,
        &token,
        &[
            ("item", "XZXK"),
            ("sender", SENDER),
            ("fields", "1"),
            ("size", "100"),
        ],
    )
    .await;
    assert_eq!(pg.size, 100);
    assert_eq!(pg.records.len(), 7);
    for got in &pg.records {
        let (_, sent) = records.iter().find(|(k, _)| *k == got.key).unwrap();
        assert_eq!(got.fields.as_ref(), Some(sent));
        assert_eq!(got.digest, sent.digest().to_hex());
        let expected = if got.key == *last_key {
            PublicStatus::Withdrawn
        } else {
            PublicStatus::Public
        };
        assert_eq!(got.status, expected);
        assert!(got.published_at.ends_with("+08:00"), "{}", got.published_at);
        assert!(got.updated_at >= got.published_at);
    }
    let pg = page(&c, &sim, &token, &[("item", "XZXK"), ("size", "100000")]).await;
    assert_eq!(pg.size, 5000, "clamped");

    for bad in [
        "item=XXXX",
        "page=1",
        "item=XZXK&page=0",
        "item=XZXK&size=x",
        "item=XZXK&fields=2",
    ] {
        let res = c
            .get(format!("{}/api/records?{bad}", sim.url()))
            .header("X-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(res).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_deletes_alters_and_backdates() {
    let sim = start_default().await;
    let c = client();
    let token = login(&c, &sim).await;
    let (k1, r1) = permit(71);
    let (k2, r2) = permit(72);
    exchange(
        &c,
        &sim,
        &token,
        message(
            "a1",
            vec![
                upsert((k1.clone(), r1.clone())),
                upsert((k2.clone(), r2.clone())),
            ],
        ),
    )
    .await;

    // Alter a stored field: the digest follows, so the record is now stale against the source.
    let res = c
        .post(format!("{}/admin/records/alter", sim.url()))
        .json(&serde_json::json!({"key": k1, "field": "XK_XDR_MC", "value": "改过的名称"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut altered = r1.clone();
    altered.set("XK_XDR_MC", "改过的名称");
    let stored = admin_records(&c, &sim).await;
    let s1 = stored.iter().find(|r| r.key == k1).unwrap();
    assert_eq!(s1.digest, altered.digest().to_hex());
    assert_eq!(s1.fields["XK_XDR_MC"], "改过的名称");
    // The connector's unchanged content is now news to the platform.
    let (r, _) = exchange(
        &c,
        &sim,
        &token,
        message("a2", vec![upsert((k1.clone(), r1.clone()))]),
    )
    .await;
    assert_eq!(statuses(&r), [ResultStatus::Accepted]);

    // Backdate the first publication.
    let res = c
        .post(format!("{}/admin/records/published_at", sim.url()))
        .json(&serde_json::json!({"key": k2, "published_at": "2024-03-20T10:00:00+08:00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pg = page(&c, &sim, &token, &[("item", "XZXK"), ("sender", SENDER)]).await;
    let p2 = pg.records.iter().find(|r| r.key == k2).unwrap();
    assert_eq!(p2.published_at, "2024-03-20T10:00:00.000+08:00");

    // Delete, with the key URL-encoded in the path.
    let mut url = reqwest::Url::parse(&sim.url()).unwrap();
    url.path_segments_mut()
        .unwrap()
        .extend(["admin", "records", &k2]);
    let res = c.delete(url.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = c.delete(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.stats().records, 1);

    for (path, body) in [
        (
            "alter",
            serde_json::json!({"key": k2, "field": "XK_XDR_MC", "value": "x"}),
        ),
        (
            "published_at",
            serde_json::json!({"key": k2, "published_at": "2024-03-20T10:00:00+08:00"}),
        ),
    ] {
        let res = c
            .post(format!("{}/admin/records/{path}", sim.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let res = c
        .post(format!("{}/admin/records/published_at", sim.url()))
        .json(&serde_json::json!({"key": k1, "published_at": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}
