//! Structure from a container line's text: JSON objects, logfmt and plain text.
//!
//! JSON objects and logfmt lines give time, level, message, trace and span ids
//! under their common names; every other field is kept as an attribute. Plain
//! text is scanned for a level word and `trace_id=`-style tokens. JSON in the
//! OpenTelemetry log data model's shape (crate::otel) also gives the severity
//! number, trace flags, attributes and resource.

use std::borrow::Cow;

use memchr::memmem;
use regex::Regex;

use crate::json::{read_top, Fields, Top, Val};
use crate::otel;
use crate::timestamp::SecondCache;

const MESSAGE: usize = 0;
const LEVEL: usize = 1;
const TIME: usize = 2;
const TRACE: usize = 3;
const SPAN: usize = 4;
const SEVERITY_NUMBER: usize = 5;
const TRACE_FLAGS: usize = 6;
const ROLES: usize = 7;

/// (role, rank): where aliases compete, the earliest name in its list wins. Every name in otel::MARKS
/// has a role; so do `body` and `flags` in a line that has one of them (OTEL_ONLY).
fn role(key: &str) -> Option<(usize, u8)> {
    Some(match key {
        "message" => (MESSAGE, 0), "msg" => (MESSAGE, 1), "log" => (MESSAGE, 2), "@message" => (MESSAGE, 3),
        "text" => (MESSAGE, 4),
        "level" => (LEVEL, 0), "lvl" => (LEVEL, 1), "severity" => (LEVEL, 2), "log.level" => (LEVEL, 3),
        "levelname" => (LEVEL, 4), "loglevel" => (LEVEL, 5), "severity_text" => (LEVEL, 6),
        "time" => (TIME, 0), "ts" => (TIME, 1), "timestamp" => (TIME, 2), "@timestamp" => (TIME, 3),
        "datetime" => (TIME, 4), "t" => (TIME, 5),
        "trace_id" => (TRACE, 0), "traceId" => (TRACE, 1), "trace.id" => (TRACE, 2), "traceID" => (TRACE, 3),
        "otelTraceID" => (TRACE, 4), "dd.trace_id" => (TRACE, 5),
        "span_id" => (SPAN, 0), "spanId" => (SPAN, 1), "span.id" => (SPAN, 2), "spanID" => (SPAN, 3),
        "otelSpanID" => (SPAN, 4), "dd.span_id" => (SPAN, 5),
        "severityText" => (LEVEL, 7),
        // OTel: the event's time, else (it is 0 or missing) when the SDK or collector saw it
        "timeUnixNano" => (TIME, 6), "time_unix_nano" => (TIME, 7),
        "observedTimeUnixNano" => (TIME, 8), "observed_time_unix_nano" => (TIME, 9),
        "severityNumber" => (SEVERITY_NUMBER, 0), "severity_number" => (SEVERITY_NUMBER, 1),
        "traceFlags" => (TRACE_FLAGS, 0), "trace_flags" => (TRACE_FLAGS, 1),
        _ => return None,
    })
}

/// Names that have a role only in a line in the OpenTelemetry log data model's shape.
const OTEL_ONLY: [(&str, (usize, u8)); 2] = [("body", (MESSAGE, 5)), ("flags", (TRACE_FLAGS, 2))];

/// Level names (lower case) → index into `Levels` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL).
fn level_index(lower: &str) -> Option<usize> {
    Some(match lower {
        "trace" | "finest" => 0,
        "debug" | "fine" | "dbug" => 1,
        "info" | "information" | "informational" | "notice" => 2,
        "warn" | "warning" | "wrn" => 3,
        "error" | "err" | "eror" => 4,
        "critical" | "crit" | "fatal" | "panic" | "alert" | "emerg" | "emergency" => 5,
        _ => return None,
    })
}

/// pino / bunyan numeric levels.
fn numeric_level_index(n: i64) -> Option<usize> {
    match n {
        10 | 20 | 30 | 40 | 50 | 60 => Some((n / 10 - 1) as usize),
        _ => None,
    }
}

const PLAIN_LEVELS: [&str; 11] =
    ["TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "WARNING", "ERROR", "ERR", "CRITICAL", "FATAL", "PANIC"];

/// The time a line says it was written: the value as written, and as nanoseconds since the epoch
/// if it is a time from 1970 to 2262.
pub struct Claim<'a> {
    pub raw: Val<'a>,
    pub ns: Option<i64>,
}

pub struct Parsed<'a> {
    pub body: Cow<'a, str>,
    pub severity_text: Option<Cow<'a, str>>,
    pub severity_number: i32,
    pub time: Option<Claim<'a>>,
    pub trace_id: Option<Cow<'a, str>>,
    pub span_id: Option<Cow<'a, str>>,
    /// W3C trace flags (bit 0: sampled), from an OTel `flags` / `traceFlags` field or a `traceparent`.
    pub trace_flags: Option<u8>,
    pub attributes: Fields<'a>,
    /// An OTel record's resource attributes (never empty when set).
    pub resource: Option<Fields<'a>>,
    pub non_object_json: bool,
}

impl<'a> Parsed<'a> {
    fn plain(body: &'a str) -> Self {
        Parsed { body: Cow::Borrowed(body), severity_text: None, severity_number: 0, time: None, trace_id: None,
                 span_id: None, trace_flags: None, attributes: Vec::new(), resource: None, non_object_json: false }
    }
}

/// Hex ids are lower-cased; Datadog's decimal 64-bit ids become hex, left-padded.
pub fn normalize_id<'a>(value: Cow<'a, str>, width: usize) -> Option<Cow<'a, str>> {
    let b = value.as_bytes();
    if b.len() == width && b.iter().all(|c| c.is_ascii_hexdigit()) {
        return Some(if b.iter().any(u8::is_ascii_uppercase) { Cow::Owned(value.to_ascii_lowercase()) } else { value });
    }
    if !b.is_empty() && b.len() <= 20 && b.iter().all(u8::is_ascii_digit) {
        return Some(Cow::Owned(hex_tail(value.parse().ok()?, width)));
    }
    None
}

/// The last `width` hex digits of `n`, zero-padded.
fn hex_tail(n: u128, width: usize) -> String {
    let hex = format!("{n:0width$x}");
    hex[hex.len() - width..].to_string()
}

fn normalize_val<'a>(v: &Val<'a>, width: usize) -> Option<Cow<'a, str>> {
    if let Some(s) = v.as_str() {
        return normalize_id(s, width);
    }
    let n: u64 = v.raw()?.parse().ok()?; // a non-negative integer
    Some(Cow::Owned(hex_tail(u128::from(n), width)))
}

fn is_integer_literal(raw: &str) -> bool {
    !raw.contains(['.', 'e', 'E'])
}

pub struct Parser {
    severities: [i32; 6],
    plain_trace: Regex,
    plain_span: Regex,
    traceparent: Regex,
    logfmt_start: Regex,
    logfmt_pair: Regex,
    level_pair: Regex,
}

impl Parser {
    /// `severities`: OpenTelemetry numbers of TRACE, DEBUG, INFO, WARN, ERROR and FATAL.
    pub fn new(severities: [i32; 6]) -> Self {
        let re = |p: &str| Regex::new(p).expect("built-in pattern");
        Parser {
            severities,
            plain_trace: re(r#"(?:trace_?id|traceId|trace\.id|traceID|otelTraceID|dd\.trace_id)[=:]\s*"?([0-9a-fA-F]{32}|[0-9]{1,20})(?-u:\b)"#),
            plain_span: re(r#"(?:span_?id|spanId|span\.id|spanID|otelSpanID)[=:]\s*"?([0-9a-fA-F]{16}|[0-9]{1,20})(?-u:\b)"#),
            traceparent: re(r"(?-u:\b)00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?-u:\b)"),
            logfmt_start: re(r"^[A-Za-z_][\w.\-/]*="),
            logfmt_pair: re(r#"([A-Za-z_][\w.\-/]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)"#),
            level_pair: re(r#"^level=("(?:[^"\\]|\\.)*"|[^\s"]*)"#),
        }
    }

    /// (severity text as written, OpenTelemetry severity number) of a level name.
    fn severity_of_name<'b>(&self, name: Cow<'b, str>) -> (Option<Cow<'b, str>>, i32) {
        let number = level_index(&name.to_ascii_lowercase()).map_or(0, |i| self.severities[i]);
        (Some(name), number)
    }

    fn severity<'b>(&self, v: &Val<'b>) -> (Option<Cow<'b, str>>, i32) {
        if let Some(s) = v.as_str() {
            return self.severity_of_name(s);
        }
        match v.raw() {
            None | Some("null" | "true" | "false") => (None, 0),
            Some(raw) => {
                let number = if is_integer_literal(raw) {
                    raw.parse().ok().and_then(numeric_level_index).map_or(0, |i| self.severities[i])
                } else {
                    0
                };
                (Some(Cow::Borrowed(raw)), number)
            }
        }
    }

    pub fn parse<'a>(&self, text: &'a str, clock: &mut SecondCache) -> Parsed<'a> {
        let stripped = text.trim_start();
        if stripped.starts_with(['{', '[']) {
            return match read_top(stripped) {
                Some(Top::Object(fields)) => self.fields(text, fields, clock),
                Some(Top::Other) => Parsed { non_object_json: true, ..self.plain(text) },
                None => self.plain(text),
            };
        }
        if memchr::memchr(b'=', text.as_bytes()).is_some() {
            if let Some(fields) = self.logfmt(text) {
                return self.fields(text, fields, clock);
            }
        }
        self.plain(text)
    }

    /// A JSON object's or a logfmt line's fields: the ones with a role are taken out, the rest are attributes.
    fn fields<'a>(&self, text: &'a str, mut fields: Fields<'a>, clock: &mut SecondCache) -> Parsed<'a> {
        // One pass gives each field's role and tells whether the line is OTel-shaped (only fields with a
        // role can say so); the names with a role only then wait for the answer.
        let mut winner: [Option<(u8, usize)>; ROLES] = [None; ROLES];
        let mut otel = false;
        let mut unset = false;
        let mut otel_only: [Option<usize>; OTEL_ONLY.len()] = [None; OTEL_ONLY.len()];
        let consider = |winner: &mut [Option<(u8, usize)>; ROLES], (r, rank): (usize, u8), i: usize, v: &Val| {
            // a value that is not one of these is an ordinary field
            let usable = match r {
                SEVERITY_NUMBER => otel::severity_number(v).is_some(),
                TRACE_FLAGS => otel::trace_flags(v).is_some(),
                _ => true,
            };
            if usable && winner[r].is_none_or(|(best, _)| rank < best) {
                winner[r] = Some((rank, i));
            }
        };
        for (i, (k, v)) in fields.iter().enumerate() {
            let Some(r) = role(k) else {
                if let Some(j) = OTEL_ONLY.iter().position(|(name, _)| name == k) {
                    otel_only[j] = otel_only[j].or(Some(i));
                }
                continue;
            };
            otel |= otel::MARKS.contains(&k.as_ref());
            if otel::is_unix_nano(k) && otel::is_zero(v) {
                unset = true; // OTel's 0 is "not set": it claims no time, and is not kept as an attribute
                continue;
            }
            consider(&mut winner, r, i, v);
        }
        if otel {
            for (j, i) in otel_only.iter().enumerate() {
                if let Some(i) = *i {
                    consider(&mut winner, OTEL_ONLY[j].1, i, &fields[i].1);
                }
            }
        }
        let take = |r: usize| winner[r].map(|(_, i)| fields[i].1.clone());
        let (message, level, time, trace, span) = (take(MESSAGE), take(LEVEL), take(TIME), take(TRACE), take(SPAN));
        let key_of = |r: usize| winner[r].map(|(_, i)| fields[i].0.clone());
        let (message_key, time_key) = (key_of(MESSAGE), key_of(TIME));
        let number = take(SEVERITY_NUMBER).and_then(|v| otel::severity_number(&v)).unwrap_or(0);
        let mut trace_flags = take(TRACE_FLAGS).and_then(|v| otel::trace_flags(&v));
        if unset || winner.iter().any(Option::is_some) {
            let mut i = 0;
            fields.retain(|(k, v)| {
                let taken = winner.iter().flatten().any(|&(_, w)| w == i);
                let keep = !(taken || unset && otel::is_unix_nano(k) && otel::is_zero(v));
                i += 1;
                keep
            });
        }
        // OTel's body may be an AnyValue ({"stringValue": …}): the value it stands for
        let any_body = match (&message, message_key.as_deref()) {
            (Some(m), Some("body")) => m.raw().filter(|r| r.starts_with('{')).and_then(otel::any_value),
            _ => None,
        };
        let body = match (&message, any_body) {
            (_, Some(json)) if json.starts_with('"') => Cow::Owned(serde_json::from_str(&json).unwrap_or(json)),
            (_, Some(json)) => Cow::Owned(json),
            (None, None) => Cow::Borrowed(text),
            (Some(m), None) => match (m.as_str(), m.raw()) {
                (Some(s), _) => s,
                (None, Some("null")) | (None, None) => Cow::Borrowed(text),
                (None, Some(raw)) => Cow::Borrowed(raw),
            },
        };
        let (severity_text, mut severity_number) = level.as_ref().map_or((None, 0), |l| self.severity(l));
        if number != 0 {
            severity_number = number; // OTel's own number is the record's, whatever its text says
        }
        let mut trace_id = trace.as_ref().and_then(|t| normalize_val(t, 32));
        let mut span_id = span.as_ref().and_then(|s| normalize_val(s, 16));
        if trace_id.is_none() {
            if let Some(i) = fields.iter().position(|(k, _)| k == "traceparent") {
                let found = fields[i].1.as_str().and_then(|tp| {
                    self.traceparent.captures(&tp).map(|c| (c[1].to_string(), c[2].to_string(), hex_byte(&c[3])))
                });
                if let Some((t, s, f)) = found {
                    fields.remove(i);
                    trace_id = Some(Cow::Owned(t));
                    span_id = span_id.or(Some(Cow::Owned(s)));
                    trace_flags = trace_flags.or(f);
                }
            }
        }
        let mut resource = None;
        if otel {
            if let Some(i) = fields.iter().position(|(k, _)| k == "resource") {
                if let Some(r) = otel::resource(&fields[i].1) {
                    fields.remove(i);
                    resource = Some(r).filter(|r| !r.is_empty());
                }
            }
            if let Some(i) = fields.iter().position(|(k, _)| k == "attributes") {
                if let Some(attrs) = otel::attributes(&fields[i].1) {
                    // the record's own attributes, at the top level with the line's other fields
                    // (which give way to an attribute of the same name)
                    fields.remove(i);
                    fields.retain(|(k, _)| !attrs.iter().any(|(a, _)| a == k));
                    fields.extend(attrs);
                }
            }
        }
        // A null time claims nothing; any other value is a claim, kept as written if it is not believed.
        let nanos = time_key.as_deref().is_some_and(otel::is_unix_nano);
        let time = time.filter(|t| t.raw() != Some("null")).map(|raw| {
            let ns = if nanos { otel::unix_nano(&raw) } else { time_ns(&raw, clock) };
            Claim { ns, raw }
        });
        Parsed { body, severity_text, severity_number, time, trace_id, span_id, trace_flags, attributes: fields,
                 resource, non_object_json: false }
    }

    /// `key=value key2="quoted value"` → fields, or None if the line is not logfmt.
    fn logfmt<'a>(&self, text: &'a str) -> Option<Fields<'a>> {
        if !self.logfmt_start.is_match(text) {
            return None;
        }
        let mut fields: Fields<'a> = Vec::new();
        for c in self.logfmt_pair.captures_iter(text) {
            let (key, value) = (c.get(1).expect("group").as_str(), c.get(2).expect("group").as_str());
            let value = if value.starts_with('"') {
                serde_json::from_str::<String>(value).map_or(Cow::Borrowed(&value[1..value.len() - 1]), Cow::Owned)
            } else {
                Cow::Borrowed(value)
            };
            // A repeated key keeps its first place and takes the last value.
            match fields.iter_mut().find(|(k, _)| k == key) {
                Some(f) => f.1 = Val::Str(value),
                None => fields.push((Cow::Borrowed(key), Val::Str(value))),
            }
        }
        (fields.len() >= 2).then_some(fields)
    }

    /// An upper-case level word among the first tokens ("2026-11-24 10:00:00 [ERROR] …"), or level=…
    fn plain_level<'a>(&self, text: &'a str) -> Option<&'a str> {
        let head = text.char_indices().nth(120).map_or(text, |(i, _)| &text[..i]);
        for token in head.split_whitespace().take(5) {
            let word = token.trim_matches(|c| "[]():|<>".contains(c));
            if PLAIN_LEVELS.contains(&word) {
                return Some(word);
            }
        }
        let i = memmem::find(text.as_bytes(), b"level=")?;
        let c = self.level_pair.captures(&text[i..])?;
        Some(c.get(1).expect("group").as_str().trim_matches('"'))
    }

    fn plain<'a>(&self, text: &'a str) -> Parsed<'a> {
        let mut p = Parsed::plain(text);
        if let Some(level) = self.plain_level(text).filter(|l| !l.is_empty()) {
            (p.severity_text, p.severity_number) = self.severity_of_name(Cow::Borrowed(level));
        }
        let b = text.as_bytes();
        let has_trace = memmem::find(b, b"race").is_some();
        if !has_trace && memmem::find(b, b"00-").is_none() {
            return p;
        }
        if let Some(t) = if has_trace { self.plain_trace.captures(text) } else { None } {
            p.trace_id = normalize_id(Cow::Borrowed(t.get(1).expect("group").as_str()), 32);
            p.span_id = self.plain_span.captures(text)
                .and_then(|s| normalize_id(Cow::Borrowed(s.get(1).expect("group").as_str()), 16));
        } else if let Some(tp) = self.traceparent.captures(text) {
            p.trace_id = Some(Cow::Borrowed(tp.get(1).expect("group").as_str()));
            p.span_id = Some(Cow::Borrowed(tp.get(2).expect("group").as_str()));
            p.trace_flags = hex_byte(tp.get(3).expect("group").as_str());
        }
        p
    }
}

fn hex_byte(s: &str) -> Option<u8> {
    u8::from_str_radix(s, 16).ok()
}

/// Epoch seconds/ms/us/ns by magnitude, or an RFC 3339 string; None if it is no time from 1970 to 2262.
fn time_ns(v: &Val, clock: &mut SecondCache) -> Option<i64> {
    if let Some(s) = v.as_str() {
        return clock.parse_ns(s.as_bytes());
    }
    let raw = v.raw()?;
    if matches!(raw, "null" | "true" | "false") || raw.starts_with(['{', '[']) {
        return None;
    }
    const SCALES: [(f64, i64); 3] = [(1e11, 1_000_000_000), (1e14, 1_000_000), (1e17, 1_000)];
    if is_integer_literal(raw) {
        let n: i64 = raw.parse().ok()?;
        let scale = SCALES.iter().find(|(limit, _)| (n.unsigned_abs() as f64) < *limit).map_or(1, |(_, s)| *s);
        return n.checked_mul(scale).filter(|&ns| ns >= 0);
    }
    let f: f64 = raw.parse().ok()?;
    let scale = SCALES.iter().find(|(limit, _)| f.abs() < *limit).map_or(1, |(_, s)| *s);
    let ns = f * scale as f64;
    // `as` saturates (1e400 would become 2262) and takes NaN to 1970: only a value that fits is a time.
    (0.0..i64::MAX as f64).contains(&ns).then_some(ns as i64)
}
