//! Redaction before anything leaves the node.
//!
//! Built-in rules (all on by default, chosen by name) and custom regexes; every
//! match becomes `[REDACTED]` (a bearer token keeps its scheme word, a URL its
//! user name) and is counted per rule. Card numbers are redacted only when they
//! pass the Luhn check, so order ids and timestamps are left alone; a card beside other numbers is
//! found among the whole digit groups of their run (`mask_cards_inside`). Each rule has
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
        // the whole run of digit groups (not at most 19 digits of it): a card may be any aligned part of it
        "card_number" => (Quick::CardRun, r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,}(?-u:\b)", Replace::Luhn),
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

/// A run of digit groups (the card regex's match: groups of digits, one space or dash between two of them)
/// that fails the Luhn check as a whole, or has more than 19 digits, may still hold a card beside other
/// numbers ("qty 2 4111 1111 1111 1111", "4111111111111111 1"). Its parts that would be redacted if they
/// stood alone are: every stretch of whole groups, 13 to 19 digits, that passes the Luhn check. A group is
/// never cut (a 20-digit id holds 13-19-digit windows that pass the check one time in ten each, and it is
/// no card). Each stretch of the run covered by such parts (parts that share a group joined, so no digit
/// of either is left) becomes one mask; the separators and groups around are kept. `digits` is the
/// number of digits in the run. The text and the number of masks, or None when no part passes.
fn mask_cards_inside(run: &str, digits: usize) -> Option<(String, u64)> {
    let b = run.as_bytes();
    let mut masked: Vec<(usize, usize)> = Vec::new(); // byte ranges, in order, disjoint
    let (mut start, mut left) = (0, digits); // the first byte of a group; the digits from there on
    while left >= 13 {
        let group_end = b[start..].iter().position(|c| !c.is_ascii_digit()).map_or(b.len(), |k| start + k);
        if let Some(len) = longest_passing_part(&b[start..]) {
            let end = start + len;
            match masked.last_mut() {
                Some(prev) if start < prev.1 => prev.1 = prev.1.max(end), // shares a group with it
                _ => masked.push((start, end)),
            }
        }
        left -= group_end - start;
        start = group_end + 1;
    }
    if masked.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(run.len());
    let mut copied = 0;
    for &(start, end) in &masked {
        out.push_str(&run[copied..start]);
        out.push_str(MASK);
        copied = end;
    }
    out.push_str(&run[copied..]);
    Some((out, masked.len() as u64))
}

/// The length in bytes of the longest part of `groups` (digit groups, one separator between two) that
/// starts at its first byte, ends at the end of a group, has 13 to 19 digits and passes the Luhn check.
fn longest_passing_part(groups: &[u8]) -> Option<usize> {
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    // The digit at index k of a part of n digits is doubled when n - 1 - k is odd: sums[0] doubles the
    // digits at even k, sums[1] those at odd k, and a part of n digits passes when sums[n % 2] does.
    let (mut sums, mut n) = ([0u32; 2], 0usize);
    let passes = |sums: &[u32; 2], n: usize| n >= 13 && sums[n % 2].is_multiple_of(10);
    let mut longest = None;
    for (i, &c) in groups.iter().enumerate() {
        if c.is_ascii_digit() {
            if n == 19 {
                return longest;
            }
            let d = usize::from(c - b'0');
            sums[n % 2] += DOUBLED[d];
            sums[1 - n % 2] += d as u32;
            n += 1;
        } else if passes(&sums, n) {
            longest = Some(i);
        }
    }
    if passes(&sums, n) {
        longest = Some(groups.len());
    }
    longest
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
                let (out, masks) = match rule.replace {
                    Replace::Mask => (MASK.to_string(), 1),
                    Replace::KeepGroup1 => (format!("{} {MASK}", &c[1]), 1),
                    Replace::UrlPassword => (format!("{}{MASK}@", &c[1]), 1),
                    Replace::Luhn => {
                        let digits: Vec<u8> = whole.bytes().filter(u8::is_ascii_digit).collect();
                        if (13..=19).contains(&digits.len()) && luhn_ok(&digits) {
                            (MASK.to_string(), 1)
                        } else {
                            // only a run that is no card as a whole is searched for one inside it
                            match mask_cards_inside(whole, digits.len()) {
                                Some(inside) => inside,
                                None => return whole.to_string(),
                            }
                        }
                    }
                };
                n += masks;
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

    // The card regex took the longest run of digit groups up to 19 digits, and only that run was checked: a
    // card beside another number made a longer run that failed the Luhn check, and the card was shipped.
    const BESIDE: [(&str, &str, u64); 13] = [
        ("qty 2 4111 1111 1111 1111 ok", "qty 2 [REDACTED] ok", 1),
        ("card 4111 1111 1111 1111 12 items", "card [REDACTED] 12 items", 1),
        ("4111111111111111 1", "[REDACTED] 1", 1),
        ("1234 4111 1111 1111 1111", "1234 [REDACTED]", 1), // past the first 19 digits of the run
        ("2024-4111-1111-1111-1111", "2024-[REDACTED]", 1),
        ("7 3782 822463 10005 8", "7 [REDACTED] 8", 1),
        ("41111111111111110000 4111111111111111", "41111111111111110000 [REDACTED]", 1),
        ("4111 1111 1111 1111 1234 5678 9012 3456", "[REDACTED] 1234 5678 9012 3456", 1),
        ("1 5555-5555-5555-4444 3 4012888888881881 1", "1 [REDACTED] 3 [REDACTED] 1", 2),
        // parts that pass the check and share a group are one mask: no digit of either is left
        ("4111-1111-1111-1111-2024", "[REDACTED]", 1), // "1111-1111-1111-2024" passes too
        ("1 2 3 4111111111111111 5 6", "1 [REDACTED]", 1), // so do "2 3 4111111111111111 5", "3 … 5 6"
        ("4111 1111 1111 1111 4012 8888 8888 1881", "[REDACTED]", 1), // and "1111 1111 1111 4012"
        // "12 5555-5555-5555" passes: masking only the leftmost part would have shipped the card's "4444"
        ("12 5555-5555-5555-4444 3 4012888888881881 7", "[REDACTED] [REDACTED]", 2),
    ];

    #[test]
    fn a_card_beside_other_numbers_is_redacted_and_they_are_kept() {
        let r = redactor(&BUILTINS, &[]);
        for (text, expected, cards) in BESIDE {
            assert_eq!(run(&r, text), (expected.to_string(), true, vec![0, 0, 0, cards, 0]), "{text:?}");
        }
    }

    #[test]
    fn a_card_beside_other_numbers_is_redacted_at_every_offset() {
        let r = redactor(&BUILTINS, &[]);
        for (text, expected, cards) in BESIDE {
            for pad in 0..40 {
                for after in ["", " ok", "\"", ", retry in 5 s"] {
                    let before = text_before(pad);
                    let line = format!("{before}{text}{after}");
                    assert_eq!(run(&r, &line), (format!("{before}{expected}{after}"), true, vec![0, 0, 0, cards, 0]),
                               "{line:?}");
                    assert!(card_run(line.as_bytes()), "{line:?}");
                }
            }
        }
    }

    /// Every part of whole digit groups of a run (the card regex's match), 13 to 19 digits, that passes the
    /// Luhn check: (first group, last group, text), by brute force.
    fn passing_parts(run: &str) -> Vec<(usize, usize, String)> {
        let groups: Vec<&str> = run.split([' ', '-']).collect();
        let mut out = Vec::new();
        for first in 0..groups.len() {
            for last in first..groups.len() {
                let digits = groups[first..=last].concat();
                if (13..=19).contains(&digits.len()) && luhn_ok(digits.as_bytes()) {
                    out.push((first, last, groups[first..=last].join(" ")));
                }
            }
        }
        out
    }

    /// Windows of 13 to 19 digits of an unseparated number that pass the Luhn check (what a rule cutting
    /// groups would redact).
    fn passing_windows(digits: &str) -> usize {
        (0..digits.len())
            .flat_map(|i| (i + 13..=(i + 19).min(digits.len())).map(move |j| (i, j)))
            .filter(|&(i, j)| luhn_ok(&digits.as_bytes()[i..j]))
            .count()
    }

    #[test]
    fn numbers_beside_numbers_that_hold_no_card_are_kept_at_every_offset() {
        let kept = [
            // 20-digit ids: a group is never cut, though each of these has windows that pass the check
            "41111111111111110000",
            "00004111111111111111",
            "12345678901234567890",
            "order 41111111111111110000 qty 2",
            "2 41111111111111110000 1",
            "41111111111111110000-1",
            "12345678901234567890 1",
            // 18 digits that fail the check as a whole, in groups none of whose parts passes it
            "1234 5678 9012 3456 78",
            "2 4111 1111 1111 1112 3",
            "123456789012 345678",
            "411111111111111110", // unseparated: its window 4111111111111111 is not looked at
            "1 411111111111111110",
            "411111111111111110 2024",
            "378282246310005000",
            "4111 1111 1111 1112 4111 1111 1111 1112",
            // timestamps
            "20240102 030405 123456",
            "20240102-030405-123",
            "ts=1732442400123 1732442400456 dur=12",
            "2024-01-02T03:04:05.123456789Z 1732442400123 200",
            "2024-01-02 03:04:05.123456789",
            // phone numbers
            "+1 555-867-5309",
            "+1 555 867 5309 12 3",
            "+44 20 7946 0958 12",
            "call 555 867 5309 or 555 867 5310",
            // IPs
            "10.0.0.1:8080",
            "192.168.100.200 10.0.0.1 1234567",
        ];
        let card_regex = Regex::new(builtin("card_number").unwrap().1).unwrap();
        for number in kept {
            // the data is what it claims: no part of whole groups passes, and the long groups have windows that do
            for m in card_regex.find_iter(number) {
                assert_eq!(passing_parts(m.as_str()), [], "{number:?}");
            }
        }
        for id in ["41111111111111110000", "00004111111111111111", "12345678901234567890", "411111111111111110",
                   "378282246310005000"] {
            assert!(passing_windows(id) > 0, "{id}");
        }
        let r = redactor(&BUILTINS, &[]);
        for number in kept {
            for pad in 0..40 {
                let text = format!("{}{number} ok", text_before(pad));
                assert_eq!(run(&r, &text), (text.clone(), false, vec![0; 5]), "{text:?}");
            }
        }
    }

    /// mask_cards_inside against the brute force: every part that passes is masked, parts sharing a group
    /// are one mask, everything else is kept.
    #[test]
    fn runs_of_random_groups_match_the_brute_force() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let cards = ["4111111111111111", "5555 5555 5555 4444", "3782 822463 10005", "4222222222222", "4012-8888-8888-1881"];
        let r = redactor(&["card_number"], &[]);
        let (mut masked, mut runs) = (0, 0);
        for _ in 0..20_000 {
            let mut parts: Vec<String> = Vec::new();
            for _ in 0..1 + next(6) {
                parts.push(if next(4) == 0 {
                    cards[next(cards.len() as u64) as usize].to_string()
                } else {
                    (0..1 + next(20)).map(|_| char::from(b'0' + next(10) as u8)).collect()
                });
            }
            let seps: Vec<&str> = (1..parts.len()).map(|_| [" ", "-"][next(2) as usize]).collect();
            let mut line = parts[0].clone();
            for (sep, part) in seps.iter().zip(&parts[1..]) {
                line.push_str(sep);
                line.push_str(part);
            }
            let digits = line.bytes().filter(u8::is_ascii_digit).count();
            // the expected text: the union of the passing parts, parts sharing a group joined
            let groups: Vec<(usize, usize)> = {
                let mut g = Vec::new();
                let mut start = 0;
                for (i, c) in line.bytes().enumerate() {
                    if c == b' ' || c == b'-' {
                        g.push((start, i));
                        start = i + 1;
                    }
                }
                g.push((start, line.len()));
                g
            };
            let mut spans: Vec<(usize, usize)> = Vec::new(); // groups
            if digits >= 13 {
                for (first, last, _) in passing_parts(&line) {
                    match spans.last_mut() {
                        Some(s) if first <= s.1 => s.1 = s.1.max(last),
                        _ => spans.push((first, last)),
                    }
                }
            }
            let mut expected = String::new();
            let mut copied = 0;
            for &(f, l) in &spans {
                expected.push_str(&line[copied..groups[f].0]);
                expected.push_str(MASK);
                copied = groups[l].1;
            }
            expected.push_str(&line[copied..]);
            let text = format!("x {line} y");
            let got = run(&r, &text);
            assert_eq!(got, (format!("x {expected} y"), !spans.is_empty(), vec![spans.len() as u64]), "{text:?}");
            runs += 1;
            masked += usize::from(!spans.is_empty());
        }
        assert!(masked > runs / 10 && masked < runs * 9 / 10, "{masked} of {runs}");
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
