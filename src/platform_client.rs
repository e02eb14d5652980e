//! The credit platform's exchange protocol (DESIGN §3), client side: token login with the HMAC sign, exchange
//! messages with per-record receipts, and the paged record listing reconcile reads. Which answers are retried
//! is one pure function, `classify`.

use crate::config::Secret;
use crate::model::Kind;
use crate::redact::{quote, quote_bytes};
use crate::retry::{parse_retry_after, redirect_target, Attempt, Budget, GiveUp, RedirectTarget};
use crate::xml::{self, Receipt, RecordPage};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use tokio::sync::Mutex;

/// The platform's endpoints, under `[platform] url`.
const TOKEN_PATH: &str = "/api/token";
const EXCHANGE_PATH: &str = "/api/exchange";
const RECORDS_PATH: &str = "/api/records";

/// What an HTTP answer from the platform means for the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Class {
    Success,
    /// The token expired or was refused: log in again, then retry.
    Relogin,
    Retry {
        after: Option<Duration>,
    },
    /// No such endpoint (404) or not for this method (405): `[platform] url` points at the wrong place.
    WrongUrl,
    Fatal,
}

/// Classifies a platform answer by status (pure).
pub fn classify(status: u16, retry_after: Option<&str>) -> Class {
    match status {
        200 => Class::Success,
        401 => Class::Relogin,
        429 => Class::Retry {
            after: parse_retry_after(retry_after),
        },
        408 | 500 | 502 | 503 | 504 => Class::Retry { after: None },
        // A redirect is not followed (the token would go along): the URL to set is where it points.
        300..=399 | 404 | 405 => Class::WrongUrl,
        _ => Class::Fatal,
    }
}

/// `sign = lowercase hex HMAC-SHA256(secret, appKey + timestamp)`.
pub fn sign(secret: &str, app_key: &str, timestamp: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(app_key.as_bytes());
    mac.update(timestamp.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A whole answer of the platform.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// Where a redirect points.
    location: Option<String>,
    body: Vec<u8>,
}

/// Sends a request and reads the whole answer. A transport failure comes back as the reason to retry.
async fn answer(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let resp = req
        .send()
        .await
        .map_err(|e| crate::retry::transport_problem("the platform", &e))?;
    let status = resp.status().as_u16();
    let retry_after = crate::retry::retry_after_header(&resp);
    let location = crate::retry::location_header(&resp);
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("platform answer cut off: {e}"))?;
    Ok(Answer {
        status,
        retry_after,
        location,
        body: body.to_vec(),
    })
}

pub struct PlatformClient {
    http: reqwest::Client,
    base: String,
    app_key: String,
    secret: Secret,
    token: Mutex<Option<String>>,
    /// The platform answered a request (any status) since this client was made: it can be reached.
    answered: std::sync::atomic::AtomicBool,
}

/// What an error answer says, fit to show: the `<Error>` code and message, or the start of any other body, without
/// `secrets` (an answer may echo our request: the login token, the records) and with ID numbers masked.
fn error_text(body: &[u8], secrets: &[&str]) -> String {
    match xml::read_error_doc(body) {
        Ok(e) => format!("{} {}", quote(&e.code, secrets), quote(&e.message, secrets)),
        Err(_) => quote_bytes(body, secrets),
    }
}

impl PlatformClient {
    /// The message for an endpoint the platform does not have where `[platform] url` says (HTTP 404 or 405), or
    /// a redirect (not followed): the request, the answer (for a redirect, where it points, shown without what
    /// could be a token), and what to set `[platform] url` to.
    fn wrong_url(&self, method: &str, path: &str, answer: &Answer, secrets: &[&str]) -> String {
        let shown = |u: &str| {
            reqwest::Url::parse(u)
                .map(|u| crate::retry::url_without_credentials(&u))
                .unwrap_or_else(|_| u.to_string())
        };
        let status = answer.status;
        let asked = format!("{}{path}", self.base);
        let now = shown(&self.base).trim_end_matches('/').to_string();
        let advice = format!(
            "check [platform] url (now {now}): it should be the platform's base address, to which dualpub adds \
             {TOKEN_PATH}, {EXCHANGE_PATH} and {RECORDS_PATH}"
        );
        if (300..400).contains(&status) {
            let redirect = format!(
                "{method} {} answered with a redirect (HTTP {status})",
                shown(&asked)
            );
            let not_followed =
                "dualpub does not follow redirects, so that the token and the records go nowhere else";
            return match redirect_target(&asked, path, answer.location.as_deref()) {
                RedirectTarget::SameEndpoint { shown, base } => format!(
                    "{redirect} to {shown}; {not_followed}: set [platform] url to {base} (now {now})"
                ),
                RedirectTarget::Elsewhere { shown } => format!(
                    "{redirect} to {shown}, which is not the platform's {path} (a login page or a gateway?); \
                     {not_followed}: {advice}"
                ),
                RedirectTarget::Unknown => format!(
                    "{redirect} that names no address (no usable Location header); {not_followed}: {advice}"
                ),
            };
        }
        let said = error_text(&answer.body, secrets);
        let said = if said.trim().is_empty() {
            String::new()
        } else {
            format!(" ({said})")
        };
        format!(
            "{method} {} answered HTTP {status}{said}: the platform has no such endpoint there; {advice}",
            shown(&asked),
        )
    }

    pub fn new(
        base: &str,
        app_key: &str,
        secret: Secret,
        timeout: Duration,
    ) -> Result<PlatformClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            // A redirect would carry the login token and the records elsewhere: report it, never follow it.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(PlatformClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            app_key: app_key.to_string(),
            secret,
            token: Mutex::new(None),
            answered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// One login attempt.
    async fn login(&self) -> Attempt<String> {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let req = xml::TokenRequest {
            app_key: self.app_key.clone(),
            timestamp: ts.clone(),
            sign: sign(self.secret.expose(), &self.app_key, &ts),
        };
        let mut body = Vec::new();
        xml::write_token_request(&req, &mut body);
        let answer = match self
            .answer(
                self.http
                    .post(format!("{}{TOKEN_PATH}", self.base))
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/xml; charset=utf-8",
                    )
                    .body(body),
            )
            .await
        {
            Ok(a) => a,
            Err(reason) => {
                return Attempt::Retry {
                    after: None,
                    reason,
                }
            }
        };
        let secrets = [self.secret.expose()];
        let (status, bytes) = (answer.status, &answer.body);
        match classify(status, answer.retry_after.as_deref()) {
            Class::Success => match xml::read_token_response(bytes) {
                // A token no request can carry would be refused, or not sent, by every call: asked for again.
                Ok(t) if t.token.trim().is_empty() => Attempt::Retry {
                    after: None,
                    reason: "the platform's login answer holds an empty token".into(),
                },
                Ok(t) if reqwest::header::HeaderValue::from_str(&t.token).is_err() => Attempt::Retry {
                    after: None,
                    reason: "the platform's login answer holds a token with characters an HTTP header cannot carry"
                        .into(),
                },
                Ok(t) => Attempt::Done(t.token),
                Err(e) => Attempt::Retry {
                    after: None,
                    reason: format!("unreadable token answer: {}", quote(&e.to_string(), &secrets)),
                },
            },
            Class::Relogin => Attempt::Config(format!(
                "the platform refused the login ({}); check [platform] app_key and the secret (secret_env / secret_file), and that this machine's clock is right",
                error_text(bytes, &secrets)
            )),
            Class::Retry { after } => Attempt::Retry { after, reason: format!("login: HTTP {status}") },
            Class::WrongUrl => Attempt::Config(format!(
                "logging in: {}",
                self.wrong_url("POST", TOKEN_PATH, &answer, &secrets)
            )),
            Class::Fatal => Attempt::Fatal(format!("login: HTTP {status}: {}", error_text(bytes, &secrets))),
        }
    }

    /// The token held, or one from a login now; whether it is new (issued by a login just now).
    async fn token(&self) -> Attempt<(String, bool)> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            return Attempt::Done((t.clone(), false));
        }
        match self.login().await {
            Attempt::Done(t) => {
                *guard = Some(t.clone());
                Attempt::Done((t, true))
            }
            Attempt::Retry { after, reason } => Attempt::Retry { after, reason },
            Attempt::Fatal(m) => Attempt::Fatal(m),
            Attempt::Config(m) => Attempt::Config(m),
            Attempt::Refused(m) => Attempt::Refused(m),
            Attempt::Malformed(m) => Attempt::Malformed(m),
        }
    }

    /// Logs in now, unless a token is held, once: a run with nothing to send still finds out, at its start, that the
    /// platform refuses its app key, secret or URL (a configuration error). Any other trouble is left to the calls
    /// that need the token, with their retries, and returned (`Some`: no login) for the run to report should
    /// nothing else reach the platform.
    pub async fn ensure_login(&self) -> Result<Option<String>, GiveUp> {
        match self.token().await {
            Attempt::Config(message) => Err(GiveUp::Config {
                what: "logging in to the platform".into(),
                message,
            }),
            Attempt::Done(_) => Ok(None),
            Attempt::Retry { reason: m, .. }
            | Attempt::Fatal(m)
            | Attempt::Refused(m)
            | Attempt::Malformed(m) => {
                tracing::debug!(problem = %m, "no login at the start of the run; sending will try again");
                Ok(Some(m))
            }
        }
    }

    /// Whether the platform has answered any request of this client other than with a server error (5xx): a run
    /// that never heard from it so cannot tell an outage (or a gateway answering for a platform that is down) from a
    /// wrong `[platform] url`, and says so.
    pub fn answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`answer`], noting that the platform answered (not with a server error).
    async fn answer(&self, req: reqwest::RequestBuilder) -> Result<Answer, String> {
        let a = answer(req).await;
        if a.as_ref().is_ok_and(|a| a.status < 500) {
            self.answered
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        a
    }

    async fn forget_token(&self, used: &str) {
        let mut guard = self.token.lock().await;
        if guard.as_deref() == Some(used) {
            *guard = None;
        }
    }

    /// One authenticated call to `endpoint` (method and path, for messages): a token (logging in when needed), the
    /// request `send` builds with it, and the answer as an attempt — `parse` reads a 200 body; a 401 forgets the
    /// token so the retry logs in again; `refused` words a final refusal.
    async fn authed<T>(
        &self,
        endpoint: (&str, &str),
        send: impl FnOnce(&str) -> reqwest::RequestBuilder,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
        refused: &str,
    ) -> Attempt<T> {
        let (token, fresh) = match self.token().await {
            Attempt::Done(t) => t,
            Attempt::Retry { after, reason } => return Attempt::Retry { after, reason },
            Attempt::Fatal(m) | Attempt::Refused(m) | Attempt::Malformed(m) => {
                return Attempt::Fatal(m)
            }
            Attempt::Config(m) => return Attempt::Config(m),
        };
        let answer = match self.answer(send(&token)).await {
            Ok(a) => a,
            Err(reason) => {
                return Attempt::Retry {
                    after: None,
                    reason,
                }
            }
        };
        let secrets = [self.secret.expose(), token.as_str()];
        let (status, bytes) = (answer.status, &answer.body);
        match classify(status, answer.retry_after.as_deref()) {
            Class::Success => match parse(bytes) {
                Ok(v) => Attempt::Done(v),
                Err(reason) => Attempt::Retry {
                    after: None,
                    reason: quote(&reason, &secrets),
                },
            },
            Class::Relogin => {
                self.forget_token(&token).await;
                // A token that expired is replaced at once; one refused as soon as it was issued would be refused
                // again: the next login waits like any retry, instead of hammering the platform's login.
                if fresh {
                    Attempt::Retry {
                        after: None,
                        reason: format!(
                            "the platform refused (HTTP 401: {}) the token its login had just issued",
                            error_text(bytes, &secrets)
                        ),
                    }
                } else {
                    Attempt::Retry {
                        after: Some(Duration::ZERO),
                        reason: "token expired (HTTP 401)".into(),
                    }
                }
            }
            Class::Retry { after } => Attempt::Retry {
                after,
                reason: format!("HTTP {status} from the platform"),
            },
            Class::WrongUrl => {
                Attempt::Config(self.wrong_url(endpoint.0, endpoint.1, &answer, &secrets))
            }
            // The message is too large for this platform (in bytes or records): the same bytes would be refused
            // again, smaller messages of the same records may not be.
            Class::Fatal if status == 413 => Attempt::Refused(format!(
                "{refused} with HTTP {status}: {}",
                error_text(bytes, &secrets)
            )),
            // A message found malformed: about its envelope (our sender or receiver code, which no smaller message
            // mends) or one of its records; sync tells by whether the platform accepts other messages.
            Class::Fatal if status == 400 && endpoint == ("POST", EXCHANGE_PATH) => {
                Attempt::Malformed(format!(
                    "{refused} with HTTP {status}: {}",
                    error_text(bytes, &secrets)
                ))
            }
            Class::Fatal => Attempt::Fatal(format!(
                "{refused} with HTTP {status}: {}",
                error_text(bytes, &secrets)
            )),
        }
    }

    /// Sends one exchange message (the exact bytes stored in the outbox) until a receipt comes back.
    pub async fn exchange(
        &self,
        budget: &Budget,
        flow: &str,
        body: bytes::Bytes,
    ) -> Result<Receipt, GiveUp> {
        let url = format!("{}{EXCHANGE_PATH}", self.base);
        budget
            .run(&format!("sending flow {flow} to the platform"), || {
                self.authed(
                    ("POST", EXCHANGE_PATH),
                    |token| {
                        self.http
                            .post(&url)
                            .header("X-Token", token)
                            .header(
                                reqwest::header::CONTENT_TYPE,
                                "application/xml; charset=utf-8",
                            )
                            .body(body.clone())
                    },
                    |bytes| match xml::read_receipt(bytes) {
                        Ok(r) if r.flow == flow => Ok(r),
                        Ok(r) => Err(format!("receipt for flow {} instead of {flow}", r.flow)),
                        Err(e) => Err(format!("unreadable receipt: {e}")),
                    },
                    "the platform refused the message",
                )
            })
            .await
    }

    /// One page of the platform's records for a sender (pages start at 1).
    pub async fn records(
        &self,
        budget: &Budget,
        kind: Kind,
        sender: &str,
        page: u64,
        size: u32,
        fields: bool,
    ) -> Result<RecordPage, GiveUp> {
        let url = format!("{}{RECORDS_PATH}", self.base);
        let page_s = page.to_string();
        let size_s = size.to_string();
        let mut q = vec![
            ("item", kind.item()),
            ("sender", sender),
            ("page", &page_s),
            ("size", &size_s),
        ];
        if fields {
            q.push(("fields", "1"));
        }
        budget
            .run(
                &format!("reading the platform's {} records", kind.item()),
                || {
                    self.authed(
                        ("GET", RECORDS_PATH),
                        |token| self.http.get(&url).query(&q).header("X-Token", token),
                        |bytes| {
                            xml::read_record_page(bytes)
                                .map_err(|e| format!("unreadable record page: {e}"))
                        },
                        "the record listing was refused",
                    )
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_that_echoes_the_request_shows_neither_token_nor_secret_nor_id_numbers() {
        let echo = format!(
            "POST /api/exchange x-token: TKN-5f3a9 sign-secret: s&cr<t <XK_FR_ZJHM>110105194912310021</XK_FR_ZJHM>{}",
            "<record/>".repeat(10_000)
        );
        let mut body = Vec::new();
        xml::write_error_doc(
            &xml::ErrorDoc {
                code: "BAD_XML".into(),
                message: echo.clone(),
            },
            &mut body,
        );
        for body in [body, echo.into_bytes()] {
            let t = error_text(&body, &["s&cr<t", "TKN-5f3a9"]);
            assert!(
                !t.contains("TKN-5f3a9") && !t.contains("s&cr<t") && !t.contains("19491231"),
                "{t}"
            );
            assert!(
                t.chars().count() < 2 * crate::redact::QUOTE_CHARS,
                "{} characters",
                t.chars().count()
            );
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(200, None), Class::Success);
        // a redirect is a URL to correct (exit 2), not an outage: the run used to read the whole feed, then stop
        assert_eq!(classify(308, None), Class::WrongUrl);
        assert_eq!(classify(401, None), Class::Relogin);
        assert_eq!(
            classify(429, Some("3")),
            Class::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(classify(503, None), Class::Retry { after: None });
        assert_eq!(classify(500, None), Class::Retry { after: None });
        assert_eq!(classify(400, None), Class::Fatal);
        assert_eq!(classify(413, None), Class::Fatal);
        assert_eq!(classify(404, None), Class::WrongUrl);
        assert_eq!(classify(405, None), Class::WrongUrl);
    }

    #[test]
    fn sign_is_lowercase_hex_hmac() {
        // RFC 4231-style check computed independently: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            sign("key", "The quick brown fox ", "jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
