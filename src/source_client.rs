//! The enforcement system's change feed (DESIGN §2): `GET /api/v1/{permits|penalties}/changes` with the
//! compound `(updated_at, id)` cursor and a bearer token. Items come back as raw JSON so that one malformed
//! record is quarantined instead of failing its page.

use crate::config::Secret;
use crate::model::Kind;
use crate::redact::{quote, quote_bytes};
use crate::retry::{parse_retry_after, redirect_target, Attempt, Budget, GiveUp, RedirectTarget};
use std::time::Duration;

pub struct SourceClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
    page_size: u32,
}

/// One page of the feed.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<serde_json::Value>,
    pub has_more: bool,
}

#[derive(serde::Deserialize)]
struct Wire {
    items: Vec<serde_json::Value>,
    has_more: bool,
}

/// [`classify`] or [`classify_raw`]: status, `Retry-After`, body, the secrets to keep out of messages, the request.
type Classify<T> = fn(u16, Option<&str>, &[u8], &[&str], &Asked) -> Attempt<T>;

/// The request an answer is to, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// `[source] url`, without a trailing `/`.
    pub base: &'a str,
    /// What dualpub added to it: `/api/v1/permits/changes` or `/api/v1/penalties/changes`.
    pub path: &'a str,
    /// The answer's `Location` header, for a redirect.
    pub location: Option<&'a str>,
}

impl Asked<'_> {
    /// A URL fit to show: no user name, password or query (`after_id` may hold an ID number).
    fn shown(url: &str) -> String {
        reqwest::Url::parse(url)
            .map(|u| crate::retry::url_without_credentials(&u))
            .unwrap_or_else(|_| url.to_string())
    }

    /// `GET <the URL asked>`.
    fn request(&self) -> String {
        format!(
            "GET {}",
            Asked::shown(&format!("{}{}", self.base, self.path))
        )
    }

    /// What `[source] url` should be, and what it is now.
    fn url_advice(&self) -> String {
        format!(
            "check [source] url (now {}): it should be the enforcement system's base address, to which dualpub adds \
             {PERMITS_PATH} and {PENALTIES_PATH}",
            Asked::shown(self.base).trim_end_matches('/')
        )
    }
}

/// Where a page of the feed goes back in time: the first record whose `updated_at` is earlier (as an instant) than
/// that of a record before it in the page, as words naming both (ids masked); `None` for a page in order. DESIGN §2
/// orders the feed by `(updated_at, id)`, and a reader goes on from a page's last records: in a feed ordered
/// otherwise (by `id` alone, a common slip) every record the page orders after later ones is skipped, silently.
/// Records within one millisecond may come in any order of ids (a database's collation may be unlike bytes, and a
/// feed may order microseconds within a millisecond by id, as the simulator does); records without a readable
/// position (`None`, or a time that is not RFC 3339) are left out.
pub fn out_of_order<'a>(
    positions: impl IntoIterator<Item = Option<(&'a str, &'a str)>>,
) -> Option<String> {
    let mut latest: Option<(i64, &str, &str)> = None;
    for (since, id) in positions.into_iter().flatten() {
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(since) else {
            continue;
        };
        let t = t.timestamp_millis();
        match latest {
            Some((l, l_since, l_id)) if t < l => {
                return Some(format!(
                    "record {} (updated_at {since}) comes after record {} (updated_at {l_since}) in one page",
                    crate::ids::mask_ids_in(id),
                    crate::ids::mask_ids_in(l_id)
                ))
            }
            Some((l, ..)) if t == l => {}
            _ => latest = Some((t, since, id)),
        }
    }
    None
}

/// The most a feed page may hold per record asked for (`limit`): far more than any record of the schema takes (its
/// longest texts are a few thousand characters), so only a feed that ignores `limit` — and would send its whole
/// table in one answer, more than memory holds — reaches it.
const PAGE_BYTES_PER_RECORD: usize = 256 << 10;

/// An answer's body, read as it comes; `None` once it passes `cap` bytes (the rest is not read).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The feed's endpoints, under `[source] url`.
const PERMITS_PATH: &str = "/api/v1/permits/changes";
const PENALTIES_PATH: &str = "/api/v1/penalties/changes";

/// Classifies a feed answer: pure, so the rules are tested without a server. What the answer says is quoted
/// without `secrets` (our token: an error answer may echo the request) and with ID numbers masked; `asked` names
/// the request in messages about `[source] url`.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    asked: &Asked,
) -> Attempt<Page> {
    classify_as(status, retry_after, body, secrets, asked, |w: Wire| Page {
        items: w.items,
        has_more: w.has_more,
    })
}

/// One page of the feed with each item left as its JSON text, for readers that deserialize items straight into
/// their own types (no `serde_json::Value` tree per record).
#[derive(Debug)]
pub struct RawPage {
    pub items: Vec<Box<serde_json::value::RawValue>>,
    pub has_more: bool,
}

#[derive(serde::Deserialize)]
struct RawWire {
    items: Vec<Box<serde_json::value::RawValue>>,
    has_more: bool,
}

/// [`classify`] for a [`RawPage`].
pub fn classify_raw(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    asked: &Asked,
) -> Attempt<RawPage> {
    classify_as(status, retry_after, body, secrets, asked, |w: RawWire| {
        RawPage {
            items: w.items,
            has_more: w.has_more,
        }
    })
}

/// The feed's own error answers: `{"error": "..."}`.
#[derive(serde::Deserialize)]
struct FeedError {
    error: String,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What a 200 answer that is no JSON page was, for the message: empty, or how it begins when it is not JSON at all
/// (a gateway's login or error page). Nothing for a JSON text cut short: serde's message says where, and its
/// beginning would quote a record.
fn not_json(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body.strip_prefix(UTF8_BOM).unwrap_or(body));
    let text = text.trim_start();
    if text.is_empty() {
        " (the answer was empty)".into()
    } else if text.starts_with(['{', '[']) {
        String::new()
    } else {
        format!(
            " (the answer is no JSON; it begins `{}`: is [source] url the enforcement system's feed, with no gateway \
             or login page in between?)",
            crate::redact::quote_at_most(text, secrets, 80)
        )
    }
}

fn classify_as<W: serde::de::DeserializeOwned, T>(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    asked: &Asked,
    page: impl FnOnce(W) -> T,
) -> Attempt<T> {
    match status {
        // A byte order mark before the JSON (servers on Windows or .NET write one) is no part of the page: read
        // as JSON, it made every page unreadable and every run end with exit 3.
        200 => match serde_json::from_slice::<W>(body.strip_prefix(UTF8_BOM).unwrap_or(body)) {
            Ok(w) => Attempt::Done(page(w)),
            // serde's message may quote a value of a record.
            Err(e) => Attempt::Retry {
                after: None,
                reason: format!(
                    "unreadable page from the source: {}{}",
                    quote(&e.to_string(), secrets),
                    not_json(body, secrets)
                ),
            },
        },
        401 | 403 => {
            let said = match serde_json::from_slice::<FeedError>(body) {
                Ok(e) => quote(&e.error, secrets),
                Err(_) => String::new(),
            };
            let said = if said.trim().is_empty() {
                String::new()
            } else {
                format!(": {said}")
            };
            Attempt::Config(format!(
                "the enforcement system refused the token (HTTP {status}{said}); check [source] token_env / \
                 token_file{}",
                if status == 403 {
                    ", and that the token may read this feed from this host"
                } else {
                    ""
                }
            ))
        }
        400 | 404 | 405 => {
            // The feed's own errors are `{"error": "..."}`; anything else (a proxy's page) is quoted as it is.
            let said = match serde_json::from_slice::<FeedError>(body) {
                Ok(e) => quote(&e.error, secrets),
                Err(_) => quote_bytes(body, secrets),
            };
            let said = if said.trim().is_empty() {
                String::new()
            } else {
                format!(" ({said})")
            };
            let meaning = match status {
                400 => "it takes the request for malformed",
                404 => "it has no feed there",
                _ => "it has no feed there for GET",
            };
            Attempt::Config(format!(
                "the enforcement system answered {} with HTTP {status}{said}: {meaning}; {}",
                asked.request(),
                asked.url_advice()
            ))
        }
        300..=399 => {
            let redirect = format!(
                "the enforcement system answered {} with a redirect (HTTP {status})",
                asked.request()
            );
            let not_followed =
                "dualpub does not follow redirects, so that the token goes nowhere else";
            let path = asked.path;
            Attempt::Config(match redirect_target(&format!("{}{path}", asked.base), path, asked.location) {
                RedirectTarget::SameEndpoint { shown, base } => format!(
                    "{redirect} to {shown}; {not_followed}: set [source] url to {base} (now {})",
                    Asked::shown(asked.base).trim_end_matches('/')
                ),
                RedirectTarget::Elsewhere { shown } => format!(
                    "{redirect} to {shown}, which is not the feed (a login page or a gateway?); {not_followed}: {}",
                    asked.url_advice()
                ),
                RedirectTarget::Unknown => format!(
                    "{redirect} that names no address (no usable Location header); {not_followed}: {}",
                    asked.url_advice()
                ),
            })
        }
        429 => Attempt::Retry {
            after: parse_retry_after(retry_after),
            reason: "HTTP 429 from the source".into(),
        },
        s => Attempt::Retry {
            after: None,
            reason: format!("HTTP {s} from the source"),
        },
    }
}

impl SourceClient {
    pub fn new(
        base: &str,
        token: Secret,
        page_size: u32,
        timeout: Duration,
    ) -> Result<SourceClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            // A redirect would carry the token elsewhere: it is an answer to report, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(SourceClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            page_size,
        })
    }

    /// Reads one page of changes after `(since, after_id)`; `since = None` reads from the beginning.
    pub async fn changes(
        &self,
        budget: &Budget,
        kind: Kind,
        since: Option<&str>,
        after_id: &str,
    ) -> Result<Page, GiveUp> {
        self.get_page(budget, kind, since, after_id, self.page_size, classify)
            .await
    }

    /// [`SourceClient::changes`], with each item left as its JSON text; `limit` items at most (a look at one
    /// position of the feed), `None` for `[source] page_size`.
    pub async fn changes_raw(
        &self,
        budget: &Budget,
        kind: Kind,
        since: Option<&str>,
        after_id: &str,
        limit: Option<u32>,
    ) -> Result<RawPage, GiveUp> {
        let limit = limit.unwrap_or(self.page_size);
        self.get_page(budget, kind, since, after_id, limit, classify_raw)
            .await
    }

    async fn get_page<T>(
        &self,
        budget: &Budget,
        kind: Kind,
        since: Option<&str>,
        after_id: &str,
        limit: u32,
        classify: Classify<T>,
    ) -> Result<T, GiveUp> {
        let path = match kind {
            Kind::Permit => PERMITS_PATH,
            Kind::Penalty => PENALTIES_PATH,
        };
        let url = format!("{}{path}", self.base);
        let page_cap = (limit as usize).max(1) * PAGE_BYTES_PER_RECORD;
        let limit = limit.to_string();
        budget
            .run(
                &format!("reading {kind} changes from the enforcement system"),
                || {
                    let mut q: Vec<(&str, &str)> = vec![("limit", limit.as_str())];
                    if let Some(s) = since {
                        q.push(("since", s));
                        q.push(("after_id", after_id));
                    }
                    let req = self
                        .http
                        .get(&url)
                        .query(&q)
                        .bearer_auth(self.token.expose());
                    let limit = &limit;
                    async move {
                        match req.send().await {
                            Err(e) => Attempt::Retry {
                                after: None,
                                reason: crate::retry::transport_problem("the source", &e),
                            },
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let ra = crate::retry::retry_after_header(&resp);
                                let location = crate::retry::location_header(&resp);
                                let asked = Asked {
                                    base: &self.base,
                                    path,
                                    location: location.as_deref(),
                                };
                                match read_capped(resp, page_cap).await {
                                    Ok(None) => Attempt::Fatal(format!(
                                        "the enforcement system answered a page of more than {} for limit={limit} \
                                         (more than {} KiB a record): it may ignore `limit` and send everything at \
                                         once, which would not fit in memory; ask its operators, or check [source] url",
                                        if page_cap >= 1 << 20 {
                                            format!("{} MiB", page_cap >> 20)
                                        } else {
                                            format!("{} KiB", page_cap >> 10)
                                        },
                                        PAGE_BYTES_PER_RECORD >> 10
                                    )),
                                    Ok(Some(body)) => classify(
                                        status,
                                        ra.as_deref(),
                                        &body,
                                        &[self.token.expose()],
                                        &asked,
                                    ),
                                    Err(e) => Attempt::Retry {
                                        after: None,
                                        reason: format!("source answer cut off: {e}"),
                                    },
                                }
                            }
                        }
                    }
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASKED: Asked = Asked {
        base: "http://127.0.0.1:8701",
        path: PERMITS_PATH,
        location: None,
    };

    #[test]
    fn classification() {
        assert!(matches!(
            classify(200, None, br#"{"items":[],"has_more":false}"#, &[], &ASKED),
            Attempt::Done(_)
        ));
        assert!(matches!(
            classify(200, None, b"<html>", &[], &ASKED),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(401, None, b"", &[], &ASKED),
            Attempt::Config(_)
        ));
        assert!(matches!(
            classify(503, None, b"", &[], &ASKED),
            Attempt::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(429, Some("2"), b"", &[], &ASKED),
            Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(
            matches!(classify(307, None, b"", &[], &ASKED), Attempt::Config(m) if m.contains("redirect"))
        );
        // a redirect to the feed at another address names the base address to set, without what could be a token
        let moved = Asked {
            location: Some("https://u:pw@zf.example/feed/api/v1/permits/changes?since=x&sig=T1"),
            ..ASKED
        };
        let Attempt::<Page>::Config(m) = classify(301, None, b"", &[], &moved) else {
            panic!("a redirect is a configuration error");
        };
        assert!(
            m.contains(
                "GET http://127.0.0.1:8701/api/v1/permits/changes with a redirect (HTTP 301) to \
                 https://zf.example/feed/api/v1/permits/changes; "
            ) && m.contains(
                "set [source] url to https://zf.example/feed (now http://127.0.0.1:8701)"
            ),
            "{m}"
        );
        assert!(!m.contains("pw") && !m.contains("T1"), "{m}");
        // a URL that names something else (the method is not allowed there): fix [source] url, no retrying
        assert!(
            matches!(classify(405, None, b"", &[], &ASKED), Attempt::Config(m) if m.contains("[source] url"))
        );
    }

    #[test]
    fn a_page_that_goes_back_in_time_is_found() {
        let at = |t: &'static str, id: &'static str| Some((t, id));
        // in order, ties in any order of ids, offsets compared as instants, unreadable times left out
        assert_eq!(
            out_of_order([
                at("2026-11-20T09:00:00.000+08:00", "XK-2"),
                at("2026-11-20T09:00:00.000+08:00", "XK-1"),
                // within a millisecond, by id
                at("2026-11-20T09:00:00.000900+08:00", "XK-5"),
                at("2026-11-20T09:00:00.000100+08:00", "XK-6"),
                None,
                at("yesterday", "XK-0"),
                at("2026-11-20T01:00:00.001Z", "XK-3"),
            ]),
            None
        );
        let m = out_of_order([
            at("2026-11-20T09:00:00.000+08:00", "XK-2"),
            at("2026-11-20T10:00:00.000+08:00", "CF-110105194912310021"),
            at("2026-11-20T01:30:00.000Z", "XK-1"),
        ])
        .expect("the third record is earlier than the second");
        assert!(
            m.contains(
                "record XK-1 (updated_at 2026-11-20T01:30:00.000Z) comes after record CF-110105"
            ) && !m.contains("1949123"),
            "{m}"
        );
    }

    #[test]
    fn a_page_after_a_byte_order_mark_is_read_and_what_is_no_page_is_named() {
        // Servers on Windows or .NET may write a UTF-8 byte order mark before the JSON.
        let Attempt::<RawPage>::Done(p) = classify_raw(
            200,
            None,
            b"\xEF\xBB\xBF{\"items\":[{\"id\":\"XK-1\"}],\"has_more\":false}",
            &[],
            &ASKED,
        ) else {
            panic!("a page after a byte order mark is a page");
        };
        assert_eq!(p.items.len(), 1);
        // A gateway's login page answered with 200: the message says what came instead, without the token.
        let login = b"<html>\n<title>SSO</title><body>login again, Bearer s3cret</body></html>";
        let Attempt::<Page>::Retry { reason, .. } = classify(200, None, login, &["s3cret"], &ASKED)
        else {
            panic!("an unreadable page is retried");
        };
        assert!(
            reason.contains("is no JSON; it begins `<html> <title>SSO</title>")
                && reason.contains("[source] url")
                && !reason.contains("s3cret"),
            "{reason}"
        );
        let Attempt::<Page>::Retry { reason, .. } = classify(200, None, b"", &[], &ASKED) else {
            panic!("an empty answer is retried");
        };
        assert!(reason.contains("(the answer was empty)"), "{reason}");
        // A JSON page cut short: serde says where; nothing of the records is quoted.
        let cut = r#"{"items":[{"id":"XK-1","party":{"name":"张三"#.as_bytes();
        let Attempt::<Page>::Retry { reason, .. } = classify(200, None, cut, &[], &ASKED) else {
            panic!("a page cut short is retried");
        };
        assert!(
            reason.contains("EOF") && !reason.contains("张三"),
            "{reason}"
        );
        // 403 is named as it came, with what the feed said.
        let Attempt::<Page>::Config(m) =
            classify(403, None, br#"{"error":"host not allowed"}"#, &[], &ASKED)
        else {
            panic!("a 403 is a configuration error");
        };
        assert!(
            m.contains("(HTTP 403: host not allowed)") && !m.contains("401"),
            "{m}"
        );
    }

    #[test]
    fn an_error_answer_that_echoes_the_request_is_quoted_without_the_token_or_id_numbers() {
        let token = "tok&en\"<x>;secret=1";
        let echo = format!(
            "{{\"error\":\"bad since in GET /api/v1/permits/changes?after_id=CF-110105194912310021 \
             authorization: Bearer {}\"}}",
            token.replace('"', "\\\"")
        );
        let Attempt::<Page>::Config(m) = classify(400, None, echo.as_bytes(), &[token], &ASKED)
        else {
            panic!("a 400 is a configuration error");
        };
        assert!(!m.contains("tok&en") && !m.contains("1949123"), "{m}");
        assert!(
            m.contains("Bearer ***") && m.contains("check [source] url"),
            "{m}"
        );
        // A page serde cannot read: its message quotes the value.
        let bad = br#"{"items":[],"has_more":"110105194912310021"}"#;
        let Attempt::<Page>::Retry { reason, .. } = classify(200, None, bad, &[token], &ASKED)
        else {
            panic!("an unreadable page is retried");
        };
        assert!(reason.contains("110105********0021"), "{reason}");
    }
}
