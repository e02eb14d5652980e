//! Simulators of the two systems dualpub sits between, used by tests, `dualpub demo` and `dualpub sim`.
//!
//! - [`gen`]: the deterministic record generator behind the enforcement-system simulator. Record *i* of a kind
//!   is a pure function of (seed, kind, i), so a million records cost no memory.
//! - [`platform`]: the credit-platform (信用平台) simulator, an HTTP + XML server speaking the exchange protocol of
//!   DESIGN §3, with a seeded fault injector and admin endpoints to inspect and tamper with what it holds.
//! - [`source`]: the enforcement-system (执法系统) simulator, an HTTP server speaking the change-feed protocol
//!   of DESIGN §2, with admin endpoints to insert, replace, delete and re-stamp records.
//!
//! Both sides of the simulator share the time format below: RFC 3339 with milliseconds and the `+08:00` offset.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike};

pub mod gen;
pub mod platform;
pub mod source;

/// China Standard Time, the offset every simulated timestamp carries.
/// Prints where a simulator listens, then waits for Ctrl-C. The handler is in place before the line is printed, so
/// a caller that signals as soon as it reads the address gets a clean stop, not the default action of SIGINT.
pub(crate) async fn announce_until_ctrl_c(banner: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;
        crate::cli::common::outln!("{banner}");
        interrupt.recv().await;
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        crate::cli::common::outln!("{banner}");
        ctrl_c.await.context("waiting for Ctrl-C")?;
    }
    Ok(())
}

pub(crate) fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// Formats epoch milliseconds as `2024-03-05T10:22:31.123+08:00` (what chrono's
/// `%Y-%m-%dT%H:%M:%S%.3f%:z` writes, without parsing a format string per call: the source simulator stamps every
/// record it serves).
pub fn format_ts(millis: i64) -> String {
    match DateTime::from_timestamp_millis(millis) {
        Some(t) => {
            let local = t.with_timezone(&cst()).naive_local();
            if !(0..=9999).contains(&local.year()) {
                return t
                    .with_timezone(&cst())
                    .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                    .to_string();
            }
            let mut out = String::with_capacity(29);
            push_ymd(&mut out, local.date(), "-");
            out.push('T');
            push_digits(&mut out, local.hour(), 2);
            out.push(':');
            push_digits(&mut out, local.minute(), 2);
            out.push(':');
            push_digits(&mut out, local.second(), 2);
            out.push('.');
            push_digits(&mut out, local.nanosecond() / 1_000_000, 3);
            out.push_str("+08:00");
            out
        }
        // Outside chrono's range (±262,000 years): cannot come from the generator or from `parse_ts`.
        None => String::new(),
    }
}

/// Appends `n` as exactly `width` decimal digits (the lowest ones, zero-padded).
pub(crate) fn push_digits(out: &mut String, n: u32, width: u32) {
    for k in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(k) % 10) as u8));
    }
}

/// Appends a date as `YYYY{sep}MM{sep}DD`, as chrono's `%Y{sep}%m{sep}%d` writes it.
pub(crate) fn push_ymd(out: &mut String, d: NaiveDate, sep: &str) {
    if !(0..=9999).contains(&d.year()) {
        out.push_str(&d.format(&format!("%Y{sep}%m{sep}%d")).to_string());
        return;
    }
    push_digits(out, d.year() as u32, 4);
    out.push_str(sep);
    push_digits(out, d.month(), 2);
    out.push_str(sep);
    push_digits(out, d.day(), 2);
}

/// Parses an RFC 3339 timestamp with any offset into epoch milliseconds (sub-millisecond digits are
/// truncated towards the past). `None` when it is not RFC 3339.
pub fn parse_ts(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_compare_as_instants() {
        let ms = parse_ts("2024-03-05T10:22:31.123+08:00").unwrap();
        assert_eq!(format_ts(ms), "2024-03-05T10:22:31.123+08:00");
        assert_eq!(parse_ts("2024-03-05T02:22:31.123Z"), Some(ms));
        assert_eq!(parse_ts("2024-03-05"), None);
    }

    #[test]
    fn formats_as_chrono_does() {
        let chrono_ts = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .unwrap()
                .with_timezone(&cst())
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                .to_string()
        };
        let mut ms = -62_000_000_000_000i64;
        while ms < 300_000_000_000_000 {
            assert_eq!(format_ts(ms), chrono_ts(ms));
            ms += 7_777_777_777_777 / 1000 + 1;
        }
        for ms in [
            0,
            1,
            999,
            1_709_605_351_123,
            253_402_271_999_999,
            253_402_272_000_000,
        ] {
            assert_eq!(format_ts(ms), chrono_ts(ms));
        }
        let mut d = NaiveDate::from_ymd_opt(1958, 1, 1).unwrap();
        while d.year() < 2030 {
            let mut s = String::new();
            push_ymd(&mut s, d, "-");
            assert_eq!(s, d.format("%Y-%m-%d").to_string());
            let mut s = String::new();
            push_ymd(&mut s, d, "");
            assert_eq!(s, d.format("%Y%m%d").to_string());
            d = d + chrono::Days::new(3);
        }
    }
}
