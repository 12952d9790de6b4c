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

/// A run of at least 13 digits, single spaces or dashes allowed between them: the shape of a card number.
/// Such a run spans 13 bytes or more, so it covers one of every 13th byte: only those are looked at
/// first, and a run is measured only around one that is a digit.
fn card_run(text: &[u8]) -> bool {
    const SPAN: usize = 13;
    let is_part = |c: u8| c.is_ascii_digit() || c == b' ' || c == b'-';
    let mut i = SPAN - 1;
    let mut scanned_to = 0; // runs already measured end before here
    while i < text.len() {
        if text[i].is_ascii_digit() && i >= scanned_to {
            let mut start = i;
            while start > 0 && is_part(text[start - 1]) {
                start -= 1;
            }
            let mut end = i;
            while end < text.len() && is_part(text[end]) {
                end += 1;
            }
            if digit_run(&text[start..end]) {
                return true;
            }
            scanned_to = end;
        }
        i += SPAN;
    }
    false
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
