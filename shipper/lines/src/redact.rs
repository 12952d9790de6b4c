//! Redaction before anything leaves the node.
//!
//! Built-in rules (all on by default, chosen by name) and custom regexes; every
//! match becomes `[REDACTED]` (a bearer token keeps its scheme word, a URL its
//! user name) and is counted per rule. Card numbers are redacted only when they
//! pass the Luhn check, so order ids and timestamps are left alone. Each rule has
//! a quick test that rules most lines out without running its regex.

use std::borrow::Cow;

use memchr::memmem;
use regex::{Captures, Regex};

pub const MASK: &str = "[REDACTED]";

#[derive(Clone, Copy)]
enum Quick {
    Always,
    Bearer,
    Scheme,
    AwsPrefix,
    CardRun,
    At,
}

#[derive(Clone, Copy)]
enum Replace {
    Mask,
    KeepGroup1, // group 1, then the mask: "Bearer [REDACTED]"
    UrlPassword,
    Luhn,
}

pub const BUILTINS: [&str; 5] = ["bearer_token", "url_password", "aws_access_key", "card_number", "email"];

fn builtin(name: &str) -> Option<(Quick, &'static str, Replace)> {
    Some(match name {
        "bearer_token" => (Quick::Bearer, r"(?i)(?-u:\b)(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", Replace::KeepGroup1),
        "url_password" => (Quick::Scheme, r"((?-u:\b)[A-Za-z][A-Za-z0-9+.-]*://[^:/\s@]+:)[^@/\s]+@", Replace::UrlPassword),
        "aws_access_key" => (Quick::AwsPrefix,
                             r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}(?-u:\b)", Replace::Mask),
        "card_number" => (Quick::CardRun, r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)", Replace::Luhn),
        "email" => (Quick::At,
                    r"(?-u:\b)[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?-u:\b)", Replace::Mask),
        _ => return None,
    })
}

fn luhn_ok(digits: &[u8]) -> bool {
    let mut total = 0u32;
    for (i, &c) in digits.iter().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d = if d > 4 { d * 2 - 9 } else { d * 2 };
        }
        total += d;
    }
    total % 10 == 0
}

/// A run of at least 13 digits, single spaces or dashes allowed between them: the shape of a card number
/// (every match of the card regex is one). Each byte of such a run is a digit, or a space or dash with a
/// digit on either side, and the run spans 13 bytes or more (13 digits with no separator is the
/// shortest), so it covers one of every 13th byte. Only those are looked at first: the stretch of digits,
/// spaces and dashes around one is measured when it is a digit, or a space or dash followed by a digit.
/// (The byte sampled inside a card may be one of its separators: "4111-1111-1111-1111" after 3 bytes has
/// only dashes at the sampled places.)
fn card_run(text: &[u8]) -> bool {
    const SPAN: usize = 13;
    let mut i = SPAN - 1;
    let mut scanned_to = 0; // stretches already measured end before here
    while i < text.len() {
        let c = text[i];
        let next = text.get(i + 1).copied().unwrap_or(0);
        // `|` and `&` (both sides evaluated, no branch): spaces are too common in text for a branch on them to
        // be guessed right, and the test is a few ns per line slower with `||` and `&&`
        if (c.is_ascii_digit() | ((c == b' ' || c == b'-') & next.is_ascii_digit())) && i >= scanned_to {
            let mut start = i;
            while start > 0 && is_card_part(text[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < text.len() && is_card_part(text[end]) {
                end += 1;
            }
            if end - start >= SPAN && digit_run(&text[start..end]) {
                return true;
            }
            scanned_to = end;
        }
        i += SPAN;
    }
    false
}

fn is_card_part(c: u8) -> bool {
    c.is_ascii_digit() || c == b' ' || c == b'-'
}

/// Within a stretch of digits, spaces and dashes: 13 digits with at most one separator between two of them.
fn digit_run(stretch: &[u8]) -> bool {
    let (mut run, mut sep) = (0, false);
    for &c in stretch {
        if c.is_ascii_digit() {
            run += 1;
            sep = false;
            if run >= 13 {
                return true;
            }
        } else if run > 0 && !sep {
            sep = true;
        } else {
            run = 0;
            sep = false;
        }
    }
    false
}

fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    let (lo, up) = (needle[0].to_ascii_lowercase(), needle[0].to_ascii_uppercase());
    memchr::memchr2_iter(lo, up, hay).any(|i| hay.len() - i >= needle.len() && hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

impl Quick {
    fn may_match(self, text: &str) -> bool {
        let b = text.as_bytes();
        match self {
            Quick::Always => true,
            Quick::Bearer => contains_ascii_ci(b, b"bearer"),
            Quick::Scheme => memmem::find(b, b"://").is_some(),
            Quick::AwsPrefix => memchr::memchr(b'A', b).is_some(),
            Quick::CardRun => card_run(b),
            Quick::At => memchr::memchr(b'@', b).is_some(),
        }
    }
}

struct Rule {
    quick: Quick,
    pattern: Regex,
    replace: Replace,
}

pub struct Redactor {
    names: Vec<String>,
    rules: Vec<Rule>,
}

impl Redactor {
    pub fn new(builtins: &[String], custom: &[String]) -> Result<Self, String> {
        let unknown: Vec<&str> = builtins.iter().filter(|b| builtin(b).is_none()).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(format!("unknown redaction rule(s) {}; known: {}", unknown.join(", "), BUILTINS.join(", ")));
        }
        let mut names = Vec::new();
        let mut rules = Vec::new();
        for name in builtins {
            let (quick, pattern, replace) = builtin(name).expect("checked above");
            names.push(name.clone());
            rules.push(Rule { quick, pattern: Regex::new(pattern).expect("built-in pattern"), replace });
        }
        for (i, p) in custom.iter().enumerate() {
            let pattern = Regex::new(p).map_err(|e| format!("redaction pattern {p:?} is not a valid regex: {e}"))?;
            names.push(format!("custom_{i}"));
            rules.push(Rule { quick: Quick::Always, pattern, replace: Replace::Mask });
        }
        Ok(Redactor { names, rules })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The redacted text and whether anything was redacted; `hits[i]` grows by rule i's matches.
    pub fn apply<'a>(&self, mut text: Cow<'a, str>, hits: &mut [u64]) -> (Cow<'a, str>, bool) {
        let mut redacted = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.quick.may_match(&text) || !rule.pattern.is_match(&text) {
                continue;
            }
            let mut n = 0u64;
            let replaced = rule.pattern.replace_all(&text, |c: &Captures| {
                let whole = &c[0];
                let out = match rule.replace {
                    Replace::Mask => MASK.to_string(),
                    Replace::KeepGroup1 => format!("{} {MASK}", &c[1]),
                    Replace::UrlPassword => format!("{}{MASK}@", &c[1]),
                    Replace::Luhn => {
                        let digits: Vec<u8> = whole.bytes().filter(u8::is_ascii_digit).collect();
                        if !(13..=19).contains(&digits.len()) || !luhn_ok(&digits) {
                            return whole.to_string();
                        }
                        MASK.to_string()
                    }
                };
                n += 1;
                out
            });
            if n > 0 {
                hits[i] += n;
                redacted = true;
                text = Cow::Owned(replaced.into_owned());
            }
        }
        (text, redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(builtins: &[&str], custom: &[&str]) -> Redactor {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Redactor::new(&s(builtins), &s(custom)).expect("rules")
    }

    /// (text after, redacted, hits per rule)
    fn run(r: &Redactor, text: &str) -> (String, bool, Vec<u64>) {
        let mut hits = vec![0; r.names().len()];
        let (out, redacted) = r.apply(Cow::Borrowed(text), &mut hits);
        (out.into_owned(), redacted, hits)
    }

    fn one(rule: &str, text: &str) -> String {
        run(&redactor(&[rule], &[]), text).0
    }

    #[test]
    fn rules_by_name_and_errors() {
        let all = redactor(&BUILTINS, &["secret=\\w+", "pin \\d{4}"]);
        assert_eq!(all.names(), ["bearer_token", "url_password", "aws_access_key", "card_number", "email", "custom_0", "custom_1"]);
        assert!(!all.is_empty() && redactor(&[], &[]).is_empty());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(Redactor::new(&s(&["email", "ssn", "phone"]), &[]).err().as_deref(),
                   Some("unknown redaction rule(s) ssn, phone; known: bearer_token, url_password, aws_access_key, card_number, email"));
        let err = Redactor::new(&[], &s(&["[a-"])).err().expect("bad regex");
        assert!(err.starts_with(r#"redaction pattern "[a-" is not a valid regex: "#), "{err}");
    }

    #[test]
    fn nothing_to_redact_stays_borrowed() {
        let r = redactor(&BUILTINS, &[]);
        let mut hits = vec![0; 5];
        let text = "GET /health 200 12ms order=1234567890123 at 2024-01-02T03:04:05Z";
        let (out, redacted) = r.apply(Cow::Borrowed(text), &mut hits);
        assert!(matches!(out, Cow::Borrowed(t) if t == text) && !redacted);
        assert_eq!(hits, [0; 5]);
        assert_eq!(run(&r, ""), (String::new(), false, vec![0; 5]));
    }

    #[test]
    fn bearer_token_keeps_its_scheme_word() {
        assert_eq!(one("bearer_token", "Authorization: Bearer abcdefgh12345678"), "Authorization: Bearer [REDACTED]");
        assert_eq!(one("bearer_token", "auth=BEARER\teyJhbGciOi.eyJzdWIi.sig_-x~+/== next"), "auth=BEARER [REDACTED] next");
        assert_eq!(one("bearer_token", "bearer abcdefgh=="), "bearer [REDACTED]");
        for kept in ["Bearer short12", "Bearer", "xbearer abcdefgh12345678", "bearer: abcdefgh12345678", "bear abcdefgh12345678"] {
            assert_eq!(one("bearer_token", kept), kept);
        }
    }

    #[test]
    fn url_password_keeps_the_user_name() {
        assert_eq!(one("url_password", "dsn=postgres://app:s3cr%40t@db:5432/x?sslmode=require"),
                   "dsn=postgres://app:[REDACTED]@db:5432/x?sslmode=require");
        assert_eq!(one("url_password", "a https://u:p@h and redis+tls://x:y@z"), "a https://u:[REDACTED]@h and redis+tls://x:[REDACTED]@z");
        for kept in ["https://user@host/x", "https://host:8080/path", "https://host:8080/x?to=a@b.com", "user:pass@host",
                     "https://:pw@host"] {
            assert_eq!(one("url_password", kept), kept);
        }
    }

    #[test]
    fn aws_access_key() {
        assert_eq!(one("aws_access_key", "key=AKIAIOSFODNN7EXAMPLE,"), "key=[REDACTED],");
        assert_eq!(one("aws_access_key", "ASIAY34FZKBOKMUTVV7A AROA1234567890ABCDEF"), "[REDACTED] [REDACTED]");
        for kept in ["AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPLEX", "XAKIAIOSFODNN7EXAMPLE", "akiaiosfodnn7example",
                     "AKIAiosfodnn7example", "ABCDIOSFODNN7EXAMPLE"] {
            assert_eq!(one("aws_access_key", kept), kept);
        }
    }

    #[test]
    fn card_numbers_only_when_luhn_valid() {
        for card in ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005", "5555555555554444"] {
            assert_eq!(one("card_number", &format!("paid with {card}.")), "paid with [REDACTED].", "{card}");
        }
        for kept in ["4111111111111112", "1234567890123", "20240102030405", "411111111111", "4111  1111 1111 1111",
                     "41111111111111110000", "4111 1111 1111 1111 x", "x4111111111111111"] {
            assert_eq!(one("card_number", kept), kept.replace("4111 1111 1111 1111 x", "[REDACTED] x"), "{kept}");
        }
        // a Luhn-invalid match is no redaction and no hit
        let r = redactor(&["card_number"], &[]);
        assert_eq!(run(&r, "a 4111111111111112 b 4012888888881881"), ("a 4111111111111112 b [REDACTED]".to_string(), true, vec![1]));
        assert_eq!(run(&r, "a 4111111111111112"), ("a 4111111111111112".to_string(), false, vec![0]));
    }

    #[test]
    fn card_quick_test_misses_no_position_of_an_unseparated_card() {
        for pad in 0..40 {
            for card in ["4111111111111111", "378282246310005", "4012888888881881"] {
                let text = format!("{}{card}{}", ":".repeat(pad), " z".repeat(pad % 3));
                assert_eq!(one("card_number", &text), text.replace(card, MASK), "{text:?}");
            }
        }
    }

    // card_run used to measure a stretch only around a sampled byte that was a digit: a separated card whose
    // sampled bytes were all its spaces or dashes ("cc=4111-1111-1111-1111") was never redacted.
    #[test]
    fn card_quick_test_misses_no_position_of_a_separated_card() {
        assert_eq!(one("card_number", "cc=4111-1111-1111-1111"), "cc=[REDACTED]");
        for pad in 0..40 {
            for card in ["4111-1111-1111-1111", "4111 1111 1111 1111", "3782 822463 10005"] {
                let text = format!("{}{card}", ":".repeat(pad));
                assert_eq!(one("card_number", &text), text.replace(card, MASK), "{text:?}");
            }
        }
    }

    /// `pad` bytes of ordinary log text with no digits, ending where a number may start (not in a word).
    fn text_before(pad: usize) -> String {
        let mut t: String = "user=bob paid: card-no. x ".chars().cycle().take(pad).collect();
        if t.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            t.pop();
            t.push(' ');
        }
        t
    }

    #[test]
    fn every_card_form_is_redacted_at_every_offset() {
        let cards = [
            "4111111111111111",        // 16 digits
            "5555-5555-5555-4444",     // 16, dashed
            "4012 8888 8888 1881",     // 16, spaced
            "4111-1111-1111-1111-110", // 19, dashed
            "6221 2600 0000 0000 001", // 19, spaced
            "4111111111111111110",     // 19 digits
            "3782 822463 10005",       // 15, Amex spaced
            "3714-496353-98431",       // 15, Amex dashed
            "30569309025904",          // 14 (Diners)
            "3056 930902 5904",        // 14, spaced
            "4222222222222",           // 13, the shortest
        ];
        let r = redactor(&BUILTINS, &[]);
        for card in cards {
            for pad in 0..40 {
                for after in ["", " ok", ", retry in 5 s", "\"", " - declined"] {
                    let before = text_before(pad);
                    let text = format!("{before}{card}{after}");
                    let (out, redacted, hits) = run(&r, &text);
                    assert_eq!(out, format!("{before}{MASK}{after}"), "{text:?}");
                    assert!(redacted && hits == [0, 0, 0, 1, 0], "{text:?}: {hits:?}");
                    // the quick test alone, the card anywhere in the text
                    assert!(card_run(text.as_bytes()), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_that_are_no_card_are_kept_at_every_offset() {
        let kept = [
            "2024-01-02T03:04:05.123456789Z", // timestamps
            "2024-01-02 03:04:05,123",
            "20240102030405",                 // 14 digits, not Luhn-valid
            "1732442400123",                  // epoch ms
            "2024-01-02-03-04-05-06",         // card-shaped (16 digits, dashes), not Luhn-valid
            "123e4567-e89b-12d3-a456-426614174000", // a UUID
            "4111111111111112",               // Luhn fails
            "1234-5678-9012-3456",
            "1234 5678 9012 3456",
            "411111111111",                   // 12 digits: too short
            "4111-1111-111",
            "4111  1111 1111 1111",           // two separators in a row
            "4111--1111-1111-1111",
            "41111111111111110000",           // 20 digits: too long
            "x4111111111111111",              // inside a word
            "4111111111111111x",
            "+1 555-867-5309",                // a phone number
            "10.0.0.1:8080",
        ];
        let r = redactor(&["card_number"], &[]);
        for number in kept {
            for pad in 0..40 {
                let text = format!("{}{number} ok", text_before(pad));
                assert_eq!(run(&r, &text), (text.clone(), false, vec![0]), "{text:?}");
            }
        }
    }

    #[test]
    fn luhn_and_digit_runs() {
        assert!(luhn_ok(b"79927398713") && !luhn_ok(b"79927398710") && luhn_ok(b"0") && luhn_ok(b""));
        assert!(digit_run(b"1234567890123") && digit_run(b"12-34 56-78 90 12-3") && !digit_run(b"123456789012"));
        assert!(!digit_run(b"123456  7890123") && !digit_run(b"--  --") && !digit_run(b""));
        assert!(card_run(b"1234567 123456") && card_run(b"....1234567890123") && card_run(b"1234567890123") && !card_run(b"123456789012"));
        assert!(!card_run(b"") && !card_run(b"abcdefghijklmnopqrstuvwxyz") && !card_run(b"1234567  123456 x 1234567"));
    }

    #[test]
    fn email() {
        assert_eq!(one("email", "to a.b+c@example.co.uk, cc x_y@sub-d.example.io"), "to [REDACTED], cc [REDACTED]");
        assert_eq!(one("email", "naïve ünï@x.com"), "naïve ünï@x.com"); // the local part must end in ASCII
        assert_eq!(one("email", "naïve ünïbob@x.com"), "naïve ünï[REDACTED]");
        assert_eq!(one("email", "café:bob@x.com"), "café:[REDACTED]");
        for kept in ["user@localhost", "@example.com", "a@b.c", "a@", "x @ y.com", "ssh git@1.2.3.4"] {
            assert_eq!(one("email", kept), kept);
        }
    }

    #[test]
    fn custom_rules_mask_the_whole_match_and_count() {
        let r = redactor(&["email"], &["secret=\\w+", "(?i)pin:\\s*\\d{4}"]);
        assert_eq!(run(&r, "secret=abc PIN: 1234 secret=def to a@b.io"),
                   ("[REDACTED] [REDACTED] [REDACTED] to [REDACTED]".to_string(), true, vec![1, 2, 1]));
    }

    #[test]
    fn overlapping_rules_apply_in_order() {
        let text = "https://bob:pw@example.com/x";
        let url_first = redactor(&["url_password", "email"], &[]);
        assert_eq!(run(&url_first, text), ("https://bob:[REDACTED]@example.com/x".to_string(), true, vec![1, 0]));
        let email_first = redactor(&["email", "url_password"], &[]);
        assert_eq!(run(&email_first, text), ("https://bob:[REDACTED]/x".to_string(), true, vec![1, 0]));
        // a later rule sees the mask an earlier one wrote, and a custom rule may match it again
        let again = redactor(&["aws_access_key"], &["\\[REDACTED\\]"]);
        assert_eq!(run(&again, "k=AKIAIOSFODNN7EXAMPLE"), ("k=[REDACTED]".to_string(), true, vec![1, 1]));
        // a bearer token that is also an AWS key id
        let both = redactor(&["bearer_token", "aws_access_key"], &[]);
        assert_eq!(run(&both, "Bearer AKIAIOSFODNN7EXAMPLE"), ("Bearer [REDACTED]".to_string(), true, vec![1, 0]));
    }

    #[test]
    fn huge_line() {
        let r = redactor(&BUILTINS, &[]);
        let text = format!("{} a@b.io {}", "x".repeat(1 << 20), "1 ".repeat(1 << 18));
        let (out, redacted, hits) = run(&r, &text);
        assert!(redacted && out.len() == text.len() - "a@b.io".len() + MASK.len());
        assert_eq!(hits, [0, 0, 0, 0, 1]);
    }
}
