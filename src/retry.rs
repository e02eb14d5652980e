//! Retrying calls to the source and the platform: exponential backoff (backon's schedule) with full jitter and a
//! cap, `Retry-After` honoured, and one total time budget per run after which the run gives up (exit 3) keeping
//! all progress. Whether an outcome is retried is decided by the callers' pure classification functions.

use backon::BackoffBuilder;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// The run's retry budget, shared by every call.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    min_delay: Duration,
    max_delay: Duration,
    retries: AtomicU64,
    rng: AtomicU64,
}

/// Why a call gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GiveUp {
    #[error("{what}: gave up after the retry budget ran out; last problem: {last}")]
    Exhausted { what: String, last: String },
    #[error("{what}: {message}")]
    Fatal { what: String, message: String },
    #[error("{what}: {message}")]
    Config { what: String, message: String },
}

impl Budget {
    pub fn new(total: Duration, max_delay: Duration) -> Budget {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Budget {
            deadline: Instant::now() + total,
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
                Attempt::Retry { after, reason } => {
                    let backoff = self.jitter(delays.next().unwrap_or(self.max_delay));
                    let wait = match after {
                        // The server said when; wait that long (at most 5 minutes), plus a little spread.
                        Some(a) => a.min(Duration::from_secs(300)) + self.jitter(self.min_delay),
                        None => backoff,
                    };
                    if Instant::now() + wait >= self.deadline {
                        return Err(GiveUp::Exhausted {
                            what: what.to_string(),
                            last: reason,
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
        .map(|u| {
            let mut u = u.clone();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        })
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

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v.and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "http://user:hunter2@127.0.0.1:{port}/api/v1/permits/changes?limit=5"
            ))
            .send()
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        let msg = transport_problem("the source", &e);
        assert_eq!(
            msg,
            format!("cannot connect to the source at http://127.0.0.1:{port}/api/v1/permits/changes?limit=5: connection refused")
        );
        assert!(!msg.contains("hunter2") && !msg.contains("user"), "{msg}");
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
