//! What another system said, made fit to show: an error answer may echo our own request — the bearer token, the
//! platform's login token, the records with their ID numbers — and whatever dualpub quotes ends up on the terminal,
//! in cron mail, in the logs and in the store's run history (which `status` shows without any secret).

use crate::ids::mask_ids_in;

/// How many characters of another system's words an error message quotes.
pub const QUOTE_CHARS: usize = 200;

/// `text` with every secret taken out (as written, percent-encoded, XML- or JSON-escaped), every ID number masked,
/// and control characters (line breaks among them) made spaces.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut s = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for form in forms(secret) {
            if s.contains(&form) {
                s = s.replace(&form, "***");
            }
        }
    }
    mask_ids_in(&s)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// [`scrub`], then cut to [`QUOTE_CHARS`] characters. Cutting comes last, so that no secret or ID number is cut
/// into a piece that no longer matches.
pub fn quote(text: &str, secrets: &[&str]) -> String {
    quote_at_most(text, secrets, QUOTE_CHARS)
}

/// [`quote`], cut to `max_chars` characters.
pub fn quote_at_most(text: &str, secrets: &[&str], max_chars: usize) -> String {
    let s = scrub(text, secrets);
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", s[..cut].trim_end()),
        None => s.trim().to_string(),
    }
}

/// [`quote`] for an answer's body, which need not be UTF-8.
pub fn quote_bytes(body: &[u8], secrets: &[&str]) -> String {
    quote(&String::from_utf8_lossy(body), secrets)
}

/// The ways a secret can appear in an echo of a request: as it is, percent-encoded (query strings and forms, with
/// `+` or `%20` for a space), XML-escaped and JSON-escaped.
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    let mut push = |f: String| {
        if !out.contains(&f) {
            out.push(f);
        }
    };
    let pct = |space: &str, upper: bool| {
        let mut e = String::new();
        for b in secret.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    e.push(char::from(b))
                }
                b' ' => e.push_str(space),
                _ if upper => e.push_str(&format!("%{b:02X}")),
                _ => e.push_str(&format!("%{b:02x}")),
            }
        }
        e
    };
    push(pct("+", true));
    push(pct("%20", true));
    push(pct("+", false));
    push(pct("%20", false));
    push(
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;"),
    );
    if let Ok(j) = serde_json::to_string(secret) {
        let j = j[1..j.len() - 1].to_string();
        // PHP's json_encode writes `/` as `\/`
        push(j.replace('/', "\\/"));
        push(j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "p@ss\"<&> word%{x}";

    #[test]
    fn a_secret_is_taken_out_in_every_form_an_echo_may_carry_it() {
        // PHP's json_encode escapes `/`
        let q = quote(
            r#"{"message":"bad request: Bearer Zm9v\/YmFy"}"#,
            &["Zm9v/YmFy"],
        );
        assert!(!q.contains("Zm9v") && q.contains("Bearer ***"), "{q}");
        let echoes = [
            format!("authorization: Bearer {SECRET}\r\nx: y"),
            "token=p%40ss%22%3C%26%3E+word%25%7Bx%7D&a=1".to_string(),
            "token=p%40ss%22%3C%26%3E%20word%25%7Bx%7D".to_string(),
            "<Error message=\"p@ss&quot;&lt;&amp;&gt; word%{x}\"/>".to_string(),
            r#"{"echo":"p@ss\"<&> word%{x}"}"#.to_string(),
            "token=p%40ss%22%3c%26%3e%20word%25%7bx%7d".to_string(),
        ];
        for echo in echoes {
            let q = quote(&echo, &[SECRET]);
            assert!(q.contains("***"), "{echo} → {q}");
            for piece in ["p@ss", "p%40ss", "word%"] {
                assert!(!q.contains(piece), "{echo} → {q}");
            }
            assert!(!q.contains('\n') && !q.contains('\r'), "{q}");
        }
    }

    #[test]
    fn id_numbers_are_masked_before_the_text_is_cut() {
        // The ID number straddles the cut: cutting first would leave 14 digits that no mask recognises.
        let text = format!("{}110105194912310021 rest", "x".repeat(QUOTE_CHARS - 10));
        let q = quote(&text, &[]);
        assert!(!q.contains("1949123"), "{q}");
        assert!(q.ends_with('…'), "{q}");
        assert_eq!(q.chars().count(), QUOTE_CHARS + 1);
    }

    #[test]
    fn short_plain_text_is_left_as_it_is() {
        assert_eq!(quote("  no such endpoint\n", &["tok"]), "no such endpoint");
        assert_eq!(quote_bytes(b"bad \xff query", &[]), "bad \u{fffd} query");
        // An empty secret takes nothing out.
        assert_eq!(scrub("abc", &[""]), "abc");
    }
}
