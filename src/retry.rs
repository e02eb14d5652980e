//! Retrying calls to the source and the platform: exponential backoff (backon's schedule) with full jitter and a
//! cap, `Retry-After` honoured, and one retry budget per run after which the run gives up (exit 3) keeping all
//! progress. The budget (`[platform] retry_budget_secs`, shared by source and platform calls) is the time the run
//! has spent in trouble — wall-clock time during which at least one call was failing or waiting to try again —
//! not the run's age: a long run that meets a brief outage late goes on. Whether an outcome is retried is decided
//! by the callers' pure classification functions.

use backon::BackoffBuilder;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// Try again; `after` is the server's `Retry-After` when it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Do not retry: the message says why and what to do.
    Fatal(String),
    /// Do not retry: the other system refused our configuration (a token, secret or URL); the message names the
    /// key to check. The run ends as a configuration error (exit 2).
    Config(String),
    /// Do not send this message again as it is: the other system refused it whole as too large (HTTP 413) without
    /// looking at its records one by one. Its records, sent in smaller messages, may pass.
    Refused(String),
    /// Do not send this message again as it is: the other system found it malformed (HTTP 400). That may be its
    /// envelope (our configuration: every message is refused alike) or one of its records (others pass); the caller
    /// tells which by what else the other system accepts.
    Malformed(String),
}

/// The run's retry budget, shared by every call.
#[derive(Debug)]
pub struct Budget {
    total: Duration,
    trouble: Mutex<Trouble>,
    min_delay: Duration,
    max_delay: Duration,
    retries: AtomicU64,
    rng: AtomicU64,
}

/// The time the run has spent in trouble: the union of the spans during which calls were failing. A call is
/// failing from its first failed attempt until it is done or gives up (its waits and its later attempts alike).
#[derive(Debug, Default)]
struct Trouble {
    /// Calls failing now.
    failing: usize,
    /// Since when `failing` has been above zero.
    since: Option<Instant>,
    /// The time spent in trouble before `since`.
    past: Duration,
}

impl Trouble {
    fn spent(&self, now: Instant) -> Duration {
        self.past
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// A call that is failing: counts toward the run's time in trouble until it is dropped (done, given up, or
/// cancelled).
struct Failing<'a>(&'a Budget);

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut t = self.0.trouble();
        t.failing -= 1;
        if t.failing == 0 {
            t.past = t.spent(now);
            t.since = None;
        }
    }
}

/// Why a call gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GiveUp {
    #[error(
        "{what}: gave up: calls have been failing for {:.1} s of this run in all, and another wait{} would pass \
         the retry budget of {} s ([platform] retry_budget_secs, which calls to the enforcement system share with \
         calls to the platform); last problem: {last}",
        .spent.as_secs_f64(),
        .asked.map(|a| format!(" of {} s (the server's Retry-After)", a.as_secs())).unwrap_or_default(),
        .budget.as_secs()
    )]
    Exhausted {
        what: String,
        last: String,
        /// The run's time in trouble when the call gave up.
        spent: Duration,
        budget: Duration,
        /// The wait the server asked for (`Retry-After`, at most 5 minutes) when it was that wait that would pass
        /// the budget: a run that gave up at once said only "failing for 0.0 s".
        asked: Option<Duration>,
    },
    #[error("{what}: {message}")]
    Fatal { what: String, message: String },
    #[error("{what}: {message}")]
    Config { what: String, message: String },
    /// The other system refused a message whole ([`Attempt::Refused`]).
    #[error("{what}: {message}")]
    Refused { what: String, message: String },
    /// The other system found a message malformed ([`Attempt::Malformed`]).
    #[error("{what}: {message}")]
    Malformed { what: String, message: String },
}

impl Budget {
    /// A budget of `total` time in trouble, waits between attempts capped at `max_delay`.
    pub fn new(total: Duration, max_delay: Duration) -> Budget {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Budget {
            total,
            trouble: Mutex::new(Trouble::default()),
            min_delay: Duration::from_millis(50).min(max_delay),
            max_delay,
            retries: AtomicU64::new(0),
            rng: AtomicU64::new(seed | 1),
        }
    }

    /// Retries performed so far in this run.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The time the run has spent in trouble so far (some call failing or waiting to try again).
    pub fn spent(&self) -> Duration {
        self.trouble().spent(Instant::now())
    }

    fn trouble(&self) -> std::sync::MutexGuard<'_, Trouble> {
        // The lock is held for a few additions only; a panic in one cannot leave the counts half-changed.
        self.trouble.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a call as failing from now on.
    fn failing(&self) -> Failing<'_> {
        let mut t = self.trouble();
        if t.failing == 0 {
            t.since = Some(Instant::now());
        }
        t.failing += 1;
        Failing(self)
    }

    /// A uniformly random duration in `[0, d]` ("full jitter").
    fn jitter(&self, d: Duration) -> Duration {
        // splitmix64 step; quality is ample for spreading retries.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { z % (nanos + 1) })
    }

    /// Runs `attempt` until it is done, fatal, or the budget is spent.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, GiveUp>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .without_max_times()
            .build();
        let mut failing = None;
        loop {
            match attempt().await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fatal(message) => {
                    return Err(GiveUp::Fatal {
                        what: what.to_string(),
                        message,
                    })
                }
                Attempt::Config(message) => {
                    return Err(GiveUp::Config {
                        what: what.to_string(),
                        message,
                    })
                }
                Attempt::Refused(message) => {
                    return Err(GiveUp::Refused {
                        what: what.to_string(),
                        message,
                    })
                }
                Attempt::Malformed(message) => {
                    return Err(GiveUp::Malformed {
                        what: what.to_string(),
                        message,
                    })
                }
                Attempt::Retry { after, reason } => {
                    failing.get_or_insert_with(|| self.failing());
                    let backoff = self.jitter(delays.next().unwrap_or(self.max_delay));
                    let asked = after.map(|a| a.min(Duration::from_secs(300)));
                    let wait = match asked {
                        // The server said when; wait that long (at most 5 minutes), plus a little spread.
                        Some(a) => a + self.jitter(self.min_delay),
                        None => backoff,
                    };
                    // This call stays failing through the wait, so the time in trouble grows by at least `wait`.
                    let spent = self.spent();
                    if spent + wait >= self.total {
                        return Err(GiveUp::Exhausted {
                            what: what.to_string(),
                            last: reason,
                            spent,
                            budget: self.total,
                            asked,
                        });
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(what, reason = %reason, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The raw `Retry-After` header of an answer, if it is text.
pub fn retry_after_header(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Says why a request to `system` ("the source", "the platform") never got an answer, for operators: "cannot
/// connect to … at URL: connection refused" when no connection could be made (refused, unknown host, connect
/// timeout), else what went wrong on the way. The URL is kept without user name or password; reqwest's own text
/// ("error sending request for url (…)") names neither the cause nor what to check.
pub fn transport_problem(system: &str, e: &reqwest::Error) -> String {
    let url = e
        .url()
        .map(url_without_credentials)
        .unwrap_or_else(|| "(no url)".into());
    let mut root: &dyn std::error::Error = e;
    let mut refused = false;
    while let Some(next) = root.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        root = next;
    }
    let cause = if refused {
        "connection refused".to_string()
    } else {
        root.to_string()
    };
    if e.is_connect() {
        format!("cannot connect to {system} at {url}: {cause}")
    } else if e.is_timeout() {
        format!("{system} did not answer in time ({url})")
    } else {
        format!("cannot reach {system} at {url}: {cause}")
    }
}

/// A URL fit to show: without user name or password.
pub fn url_without_credentials(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    // The query names the feed position (`after_id` is a record id, which may carry an ID number), and a query or
    // fragment in a redirect's `Location` may carry a token (`?ticket=…`, `#access_token=…`): left out.
    u.set_query(None);
    u.set_fragment(None);
    crate::ids::mask_ids_in(u.as_str())
}

/// The `Location` of an answer, if it is text.
pub fn location_header(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Where a redirect points, as far as an operator can act on it.
#[derive(Debug, PartialEq, Eq)]
pub enum RedirectTarget {
    /// No `Location`, or one that is no URL.
    Unknown,
    /// The endpoint asked for under another base address (`http://a/api/token` → `https://b/api/token`): the
    /// address shown, and the base address to configure.
    SameEndpoint { shown: String, base: String },
    /// Anywhere else: a login page, another path.
    Elsewhere { shown: String },
}

/// Reads a redirect to `asked` (the URL requested, whose last part is `endpoint`, e.g. `/api/token`): `location`
/// resolved against `asked`, shown without user name, password, query or fragment, ID numbers masked.
pub fn redirect_target(asked: &str, endpoint: &str, location: Option<&str>) -> RedirectTarget {
    let Some(target) = location.and_then(|l| {
        reqwest::Url::parse(asked)
            .ok()
            .and_then(|asked| asked.join(l.trim()).ok())
    }) else {
        return RedirectTarget::Unknown;
    };
    let shown = url_without_credentials(&target);
    match target.path().strip_suffix(endpoint) {
        Some(base_path) => {
            let mut base = target.clone();
            base.set_path(base_path);
            let base = url_without_credentials(&base)
                .trim_end_matches('/')
                .to_string();
            RedirectTarget::SameEndpoint { shown, base }
        }
        None => RedirectTarget::Elsewhere { shown },
    }
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v.and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_target_is_shown_without_credentials_query_or_fragment() {
        let asked = "http://127.0.0.1:8702/api/token";
        assert_eq!(
            redirect_target(
                asked,
                "/api/token",
                Some("https://u:pw@credit.example/gw/api/token?ticket=T1#access_token=T2")
            ),
            RedirectTarget::SameEndpoint {
                shown: "https://credit.example/gw/api/token".into(),
                base: "https://credit.example/gw".into(),
            }
        );
        assert_eq!(
            redirect_target(
                asked,
                "/api/token",
                Some("/login?next=%2Fapi%2Ftoken&sid=S")
            ),
            RedirectTarget::Elsewhere {
                shown: "http://127.0.0.1:8702/login".into()
            }
        );
        assert_eq!(
            redirect_target(asked, "/api/token", None),
            RedirectTarget::Unknown
        );
        assert_eq!(
            redirect_target(asked, "/api/token", Some("http://[::1")),
            RedirectTarget::Unknown
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Budget::new(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..1000 {
            assert!(b.jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
        assert_eq!(b.jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_budget_is_spent_and_counts_retries() {
        let b = Budget::new(Duration::from_secs(10), Duration::from_secs(2));
        let mut n = 0;
        let r: Result<(), _> = b
            .run("test call", || {
                n += 1;
                async {
                    Attempt::Retry {
                        after: None,
                        reason: "503".into(),
                    }
                }
            })
            .await;
        assert!(matches!(r, Err(GiveUp::Exhausted { .. })));
        assert!(n > 3, "retried {n} times");
        assert_eq!(b.retries(), n - 1);
    }

    /// An attempt that fails (503) until `until`, then is done.
    fn failing_until(until: Instant) -> impl FnMut() -> std::future::Ready<Attempt<()>> {
        move || {
            std::future::ready(if Instant::now() < until {
                Attempt::Retry {
                    after: None,
                    reason: "HTTP 503".into(),
                }
            } else {
                Attempt::Done(())
            })
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_brief_failure_is_retried_however_long_the_run_has_lasted() {
        let b = Budget::new(secs(10.0), secs(0.5));
        // A healthy hour, then a 3 s outage: the run was given up at once when the budget counted from its start.
        tokio::time::sleep(secs(3600.0)).await;
        let r = b
            .run("late call", failing_until(Instant::now() + secs(3.0)))
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert!(b.retries() > 0);
        let spent = b.spent();
        assert!(spent >= secs(3.0) && spent <= secs(3.5), "{spent:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn brief_failures_add_up_until_they_pass_the_budget() {
        let b = Budget::new(secs(10.0), secs(0.5));
        for _ in 0..3 {
            let r = b
                .run("a call", failing_until(Instant::now() + secs(2.0)))
                .await;
            assert!(r.is_ok(), "{r:?}");
            // healthy time in between counts for nothing
            tokio::time::sleep(secs(100.0)).await;
        }
        // Tokio's timers round a sleep up to the next millisecond: each wait may be up to 1 ms longer than drawn.
        let slack = Duration::from_millis(50);
        let spent = b.spent();
        assert!(
            spent >= secs(6.0) && spent <= secs(7.5) + slack,
            "{spent:?}"
        );
        // What is left of the budget, not a fresh one: the next outage ends the run within 4 s.
        let start = Instant::now();
        let r = b.run("a call", failing_until(start + secs(60.0))).await;
        let Err(e @ GiveUp::Exhausted { .. }) = r else {
            panic!("{r:?}");
        };
        assert!(
            start.elapsed() <= secs(4.0) + Duration::from_millis(2),
            "{:?}",
            start.elapsed()
        );
        // Under the budget, but for the last wait's rounding to the millisecond (it failed 1 run in ~12 with the
        // strict `< 10 s`: a wait drawn to end just before 10 s ended just after it).
        let spent = b.spent();
        assert!(
            spent >= secs(9.5) && spent < secs(10.0) + Duration::from_millis(2),
            "{spent:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("[platform] retry_budget_secs")
                && msg.contains("enforcement system")
                && msg.contains("retry budget of 10 s")
                && msg.ends_with("last problem: HTTP 503"),
            "{msg}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_failing_at_the_same_time_count_once() {
        let b = Budget::new(secs(60.0), secs(0.5));
        let until = Instant::now() + secs(5.0);
        let (x, y) = tokio::join!(
            b.run("source call", failing_until(until)),
            b.run("platform call", failing_until(until + secs(1.0)))
        );
        assert!(x.is_ok() && y.is_ok());
        let spent = b.spent();
        assert!(spent >= secs(6.0) && spent <= secs(6.5), "{spent:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_or_cancelled_stops_counting() {
        let b = Budget::new(secs(60.0), secs(0.5));
        let never = Instant::now() + secs(3600.0);
        let cancelled =
            tokio::time::timeout(secs(4.0), b.run("cancelled call", failing_until(never))).await;
        assert!(cancelled.is_err(), "the call was still retrying");
        let spent = b.spent();
        assert!(spent >= secs(3.5) && spent <= secs(4.0), "{spent:?}");
        let fatal: Result<(), _> = b
            .run("refused call", || async { Attempt::Fatal("400".into()) })
            .await;
        assert!(matches!(fatal, Err(GiveUp::Fatal { .. })));
        tokio::time::sleep(secs(100.0)).await;
        assert_eq!(b.spent(), spent);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let b = Budget::new(Duration::from_secs(60), Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        let mut first = true;
        let r = b
            .run("throttled call", || {
                let f = first;
                first = false;
                async move {
                    if f {
                        Attempt::Retry {
                            after: Some(Duration::from_secs(5)),
                            reason: "429".into(),
                        }
                    } else {
                        Attempt::Done(7)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    /// A server asking for a wait longer than the budget: the call gives up at once, and the message said only
    /// "failing for 0.0 s". It names the wait asked for.
    #[tokio::test(start_paused = true)]
    async fn a_wait_asked_for_beyond_the_budget_is_named_when_giving_up() {
        let b = Budget::new(Duration::from_secs(60), Duration::from_secs(30));
        let r: Result<(), _> = b
            .run("throttled call", || async {
                Attempt::Retry {
                    after: Some(Duration::from_secs(120)),
                    reason: "429".into(),
                }
            })
            .await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("another wait of 120 s (the server's Retry-After) would pass the retry budget of 60 s"),
            "{e}"
        );
        // a wait of its own (no Retry-After) is not said to be asked for
        let b = Budget::new(Duration::from_secs(1), Duration::from_secs(30));
        let r: Result<(), _> = b
            .run("failing call", || async {
                Attempt::Retry {
                    after: None,
                    reason: "503".into(),
                }
            })
            .await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("another wait would pass"), "{e}");
    }

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_named_with_its_url_and_no_credentials() {
        let port = closed_port();
        let e = reqwest::Client::new()
            .get(format!(
                "http://user:hunter2@127.0.0.1:{port}/api/v1/permits/changes?limit=5&after_id=CF-410105198001011239"
            ))
            .send()
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        let msg = transport_problem("the source", &e);
        assert_eq!(
            msg,
            format!("cannot connect to the source at http://127.0.0.1:{port}/api/v1/permits/changes: connection refused")
        );
        assert!(!msg.contains("hunter2") && !msg.contains("user"), "{msg}");
        // the query names a record id, which may carry an ID number: left out
        assert!(!msg.contains("19800101"), "{msg}");
    }

    #[test]
    fn retry_after_header() {
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
