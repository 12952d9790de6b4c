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
                SEVERITY_NUMBER => otel::severity_number(v, &self.severities).is_some(),
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
        let number = take(SEVERITY_NUMBER).and_then(|v| otel::severity_number(&v, &self.severities)).unwrap_or(0);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SEVERITIES: [i32; 6] = [1, 5, 9, 13, 17, 21]; // schemas.record.SEVERITY_NUMBERS
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";
    const T0: i64 = 1_704_164_645; // 2024-01-02T03:04:05Z

    fn parser() -> Parser {
        Parser::new(SEVERITIES)
    }

    /// A line parsed, its text and attributes as owned strings: attributes as (key, JSON or logfmt text).
    struct P {
        body: String,
        level: Option<String>,
        number: i32,
        time: Option<(String, Option<i64>)>,
        trace: Option<String>,
        span: Option<String>,
        flags: Option<u8>,
        attrs: Vec<(String, String)>,
        resource: Option<Vec<(String, String)>>,
        non_object: bool,
    }

    fn text_of(v: &Val) -> String {
        let mut out = Vec::new();
        v.write(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    fn owned(f: &Fields) -> Vec<(String, String)> {
        f.iter().map(|(k, v)| (k.to_string(), text_of(v))).collect()
    }

    fn parse(text: &str) -> P {
        let p = parser().parse(text, &mut SecondCache::default());
        P {
            body: p.body.into_owned(),
            level: p.severity_text.map(Cow::into_owned),
            number: p.severity_number,
            time: p.time.map(|c| (text_of(&c.raw), c.ns)),
            trace: p.trace_id.map(Cow::into_owned),
            span: p.span_id.map(Cow::into_owned),
            flags: p.trace_flags,
            attrs: owned(&p.attributes),
            resource: p.resource.as_ref().map(owned),
            non_object: p.non_object_json,
        }
    }

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn level_names_and_aliases() {
        let cases: [(&[&str], usize); 6] = [
            (&["trace", "finest"], 0), (&["debug", "fine", "dbug"], 1),
            (&["info", "information", "informational", "notice"], 2), (&["warn", "warning", "wrn"], 3),
            (&["error", "err", "eror"], 4), (&["critical", "crit", "fatal", "panic", "alert", "emerg", "emergency"], 5)];
        for (names, i) in cases {
            for name in names {
                assert_eq!(level_index(name), Some(i), "{name}");
            }
        }
        for other in ["", "INFO", "verbose", "warn ", "information!", "severe", "0"] {
            assert_eq!(level_index(other), None, "{other:?}");
        }
        assert_eq!([10, 20, 30, 40, 50, 60].map(numeric_level_index), [0, 1, 2, 3, 4, 5].map(Some));
        for n in [0, 1, 9, 15, 35, 70, -10, 100] {
            assert_eq!(numeric_level_index(n), None, "{n}");
        }
    }

    #[test]
    fn severity_numbers_come_from_the_table_given() {
        let p = Parser::new([100, 101, 102, 103, 104, 105]);
        let mut clock = SecondCache::default();
        for (line, want) in [(r#"{"level":"TRACE"}"#, 100), (r#"{"level":"Debug"}"#, 101), (r#"{"level":"notice"}"#, 102),
                             (r#"{"level":"WARNING"}"#, 103), (r#"{"level":"err"}"#, 104), (r#"{"level":"Emergency"}"#, 105),
                             (r#"{"level":60}"#, 105), (r#"{"level":"verbose"}"#, 0), ("x [WARN] y", 103), ("level=fatal", 105)] {
            assert_eq!(p.parse(line, &mut clock).severity_number, want, "{line}");
        }
        // so are OTel's enum names (a name's step is added to its level's first number)
        let p = Parser::new([2, 6, 10, 14, 18, 21]);
        for (line, want) in [(r#"{"severityNumber":"SEVERITY_NUMBER_WARN2","level":"info"}"#, 15),
                             (r#"{"severity_number":"SEVERITY_NUMBER_TRACE","level":"info"}"#, 2),
                             (r#"{"severityNumber":"SEVERITY_NUMBER_FATAL4"}"#, 24), (r#"{"severityNumber":7}"#, 7)] {
            assert_eq!(p.parse(line, &mut clock).severity_number, want, "{line}");
        }
    }

    #[test]
    fn json_roles_are_taken_out_the_rest_are_attributes() {
        let p = parse(&format!(r#"{{"ts":"2024-01-02T03:04:05Z","level":"warn","msg":"disk full","user":"bob","n":{{"a":1}},"trace_id":"{}","span_id":"{SPAN}"}}"#,
                               TRACE.to_uppercase()));
        assert_eq!((p.body.as_str(), p.level.as_deref(), p.number), ("disk full", Some("warn"), 13));
        assert_eq!(p.time, Some((r#""2024-01-02T03:04:05Z""#.to_string(), Some(T0 * 1_000_000_000))));
        assert_eq!((p.trace.as_deref(), p.span.as_deref(), p.flags), (Some(TRACE), Some(SPAN), None));
        assert_eq!(p.attrs, kv(&[("user", r#""bob""#), ("n", r#"{"a":1}"#)]));
        assert!(p.resource.is_none() && !p.non_object);
    }

    #[test]
    fn the_earliest_alias_wins_the_others_stay() {
        let p = parse(r#"{"msg":"second","text":"fifth","message":"first","severity":"info","lvl":"error"}"#);
        assert_eq!((p.body.as_str(), p.level.as_deref(), p.number), ("first", Some("error"), 17));
        assert_eq!(p.attrs, kv(&[("msg", r#""second""#), ("text", r#""fifth""#), ("severity", r#""info""#)]));
    }

    #[test]
    fn message_values_that_are_not_strings() {
        assert_eq!(parse(r#"{"msg":{"a":1},"x":1}"#).body, r#"{"a":1}"#);
        assert_eq!(parse(r#"{"msg":42}"#).body, "42");
        let line = r#"{"msg":null,"x":1}"#;
        assert_eq!((parse(line).body.as_str(), parse(line).attrs), (line, kv(&[("x", "1")])));
        let no_msg = r#"{"x":1}"#;
        assert_eq!(parse(no_msg).body, no_msg);
        assert_eq!(parse(r#"{"msg":"a\nb \u00e9"}"#).body, "a\nb é");
    }

    #[test]
    fn level_values_that_are_not_strings() {
        let lv = |line: &str| { let p = parse(line); (p.level, p.number) };
        assert_eq!(lv(r#"{"level":30}"#), (Some("30".to_string()), 9)); // pino / bunyan
        assert_eq!(lv(r#"{"level":50}"#), (Some("50".to_string()), 17));
        assert_eq!(lv(r#"{"level":35}"#), (Some("35".to_string()), 0));
        assert_eq!(lv(r#"{"level":30.0}"#), (Some("30.0".to_string()), 0));
        assert_eq!(lv(r#"{"level":3e1}"#), (Some("3e1".to_string()), 0));
        assert_eq!(lv(r#"{"level":{"x":1}}"#), (Some(r#"{"x":1}"#.to_string()), 0));
        assert_eq!(lv(r#"{"level":null}"#), (None, 0));
        assert_eq!(lv(r#"{"level":true}"#), (None, 0));
        assert_eq!(lv(r#"{"level":""}"#), (Some(String::new()), 0));
        assert!(parse(r#"{"level":null,"x":1}"#).attrs == kv(&[("x", "1")])); // taken all the same
    }

    #[test]
    fn claimed_times() {
        let ns = |line: &str| parse(line).time.map(|t| t.1);
        let s = T0 * 1_000_000_000;
        assert_eq!(ns(&format!(r#"{{"time":{T0}}}"#)), Some(Some(s)));
        assert_eq!(ns(&format!(r#"{{"time":{}}}"#, T0 * 1000 + 123)), Some(Some(s + 123_000_000)));
        assert_eq!(ns(&format!(r#"{{"time":{}}}"#, T0 * 1_000_000 + 7)), Some(Some(s + 7_000)));
        assert_eq!(ns(&format!(r#"{{"time":{}}}"#, s + 9)), Some(Some(s + 9)));
        assert_eq!(ns(&format!(r#"{{"time":{T0}.5}}"#)), Some(Some(s + 500_000_000)));
        assert_eq!(ns(r#"{"@timestamp":"2024-01-02T03:04:05.25+00:00"}"#), Some(Some(s + 250_000_000)));
        assert_eq!(ns(r#"{"time":-5}"#), Some(None));
        assert_eq!(ns(r#"{"time":1e400}"#), Some(None));
        assert_eq!(ns(r#"{"time":"yesterday"}"#), Some(None));
        assert_eq!(ns(r#"{"time":"1704164645"}"#), Some(None)); // a string is read as RFC 3339 only
        assert_eq!(ns(r#"{"time":true}"#), Some(None));
        assert_eq!(ns(r#"{"time":[1]}"#), Some(None));
        assert_eq!(ns(r#"{"time":null}"#), None);
        assert_eq!(parse(r#"{"time":"yesterday"}"#).time.map(|t| t.0).as_deref(), Some(r#""yesterday""#));
    }

    #[test]
    fn ids_normalized() {
        assert_eq!(normalize_id(Cow::Borrowed("4BF92F3577B34DA6A3CE929D0E0E4736"), 32).as_deref(), Some(TRACE));
        assert!(matches!(normalize_id(Cow::Borrowed(TRACE), 32), Some(Cow::Borrowed(_))));
        assert_eq!(normalize_id(Cow::Borrowed("1234"), 32).as_deref(), Some("000000000000000000000000000004d2"));
        assert_eq!(normalize_id(Cow::Borrowed("5678"), 16).as_deref(), Some("000000000000162e"));
        assert_eq!(normalize_id(Cow::Borrowed("18446744073709551615"), 16).as_deref(), Some("ffffffffffffffff"));
        // 20 digits beyond 64 bits: the low 64 bits
        assert_eq!(normalize_id(Cow::Borrowed("99999999999999999999"), 16).as_deref(), Some("6bc75e2d630fffff"));
        for bad in ["", "123456789012345678901", "4bf92f3577b34da6a3ce929d0e0e473", "zz", "-1", "12 34", &format!("{TRACE}0")] {
            assert_eq!(normalize_id(Cow::Borrowed(bad), 32), None, "{bad}");
        }
        let p = parse(r#"{"dd.trace_id":"1234","dd.span_id":5678,"msg":"x"}"#);
        assert_eq!((p.trace.as_deref(), p.span.as_deref()), (Some("000000000000000000000000000004d2"), Some("000000000000162e")));
        // an id that is no id is not kept anywhere
        let p = parse(r#"{"trace_id":"nope","span_id":-1,"msg":"x"}"#);
        assert_eq!((p.trace, p.span, p.attrs), (None, None, Vec::new()));
    }

    #[test]
    fn traceparent_field() {
        let p = parse(&format!(r#"{{"msg":"x","traceparent":"00-{TRACE}-{SPAN}-01","k":1}}"#));
        assert_eq!((p.trace.as_deref(), p.span.as_deref(), p.flags), (Some(TRACE), Some(SPAN), Some(1)));
        assert_eq!(p.attrs, kv(&[("k", "1")]));
        // an own trace id wins; the traceparent then stays an attribute
        let own = "0".repeat(31) + "1";
        let p = parse(&format!(r#"{{"trace_id":"{own}","traceparent":"00-{TRACE}-{SPAN}-01"}}"#));
        assert_eq!((p.trace.as_deref(), p.span, p.attrs.len()), (Some(own.as_str()), None, 1));
        // upper-case hex is no traceparent
        let p = parse(&format!(r#"{{"traceparent":"00-{}-{SPAN}-01"}}"#, TRACE.to_uppercase()));
        assert_eq!((p.trace, p.attrs.len()), (None, 1));
    }

    #[test]
    fn lone_surrogate_line_is_kept_as_text() {
        let line = r#"{"msg":"bad \ud800 escape","level":"error","user":"bob"}"#;
        let p = parse(line);
        assert_eq!((p.body.as_str(), p.level, p.number, p.attrs.len(), p.non_object), (line, None, 0, 0, false));
    }

    #[test]
    fn json_that_is_no_object() {
        for (line, non_object) in [("[1,2]", true), (" [\"a\"]", true), ("{oops", false), ("[1,", false), ("{\"a\":1} x", false)] {
            let p = parse(line);
            assert_eq!((p.body.as_str(), p.non_object, p.attrs.len()), (line, non_object, 0), "{line}");
        }
        // leading space before an object is fine; the body is the message
        assert_eq!(parse("  \t{\"msg\":\"x\"}").body, "x");
        // a bare JSON string or number is plain text, not JSON
        let p = parse("\"quoted\"");
        assert_eq!((p.body.as_str(), p.non_object), ("\"quoted\"", false));
    }

    #[test]
    fn logfmt_fields() {
        let p = parse(r#"ts=2024-01-02T03:04:05Z level=info msg="hello world" user=bob http.method=GET k8s/pod-name=x-1"#);
        assert_eq!((p.body.as_str(), p.level.as_deref(), p.number), ("hello world", Some("info"), 9));
        assert_eq!(p.time.map(|t| t.1), Some(Some(T0 * 1_000_000_000)));
        assert_eq!(p.attrs, kv(&[("user", r#""bob""#), ("http.method", r#""GET""#), ("k8s/pod-name", r#""x-1""#)]));
    }

    #[test]
    fn logfmt_quoting_and_escapes() {
        let p = parse(r#"a=1 msg="say \"hi\"\tnow \u00e9" b="bad \q escape" c="" d="#);
        assert_eq!(p.body, "say \"hi\"\tnow é");
        assert_eq!(p.attrs, kv(&[("a", r#""1""#), ("b", r#""bad \\q escape""#), ("c", r#""""#), ("d", r#""""#)]));
        // an unterminated quote: the key gets an empty value and the scan goes on
        let p = parse(r#"a=1 b="unterminated c=3"#);
        assert_eq!(p.attrs, kv(&[("a", r#""1""#), ("b", r#""""#), ("c", r#""3""#)]));
    }

    #[test]
    fn logfmt_bare_keys_repeats_and_garbage() {
        // bare words and keys without '=' are skipped
        assert_eq!(parse("a=1 flag b=2 -x=3").attrs, kv(&[("a", r#""1""#), ("b", r#""2""#), ("x", r#""3""#)]));
        // a repeated key keeps its first place and takes the last value
        assert_eq!(parse("a=1 b=2 a=3").attrs, kv(&[("a", r#""3""#), ("b", r#""2""#)]));
        // logfmt values are strings: a numeric level is no level number there
        let p = parse("level=30 msg=x");
        assert_eq!((p.level.as_deref(), p.number), (Some("30"), 0));
        // not logfmt: one pair only, or a line not starting with key=
        for line in ["a=1 just text", "hello a=1 b=2", "=== ===", "1a=1 b=2", "a =1 b=2", "a=1"] {
            let p = parse(line);
            assert_eq!((p.body.as_str(), p.attrs.len()), (line, 0), "{line}");
        }
    }

    #[test]
    fn plain_text_levels() {
        let lv = |line: &str| { let p = parse(line); (p.level, p.number) };
        let some = |s: &str, n| (Some(s.to_string()), n);
        assert_eq!(lv("2024-01-02 10:00:00 [ERROR] boom"), some("ERROR", 17));
        assert_eq!(lv("INFO: started"), some("INFO", 9));
        assert_eq!(lv("<WARNING> low disk"), some("WARNING", 13));
        assert_eq!(lv("(NOTICE) x"), some("NOTICE", 9));
        assert_eq!(lv("a b c d |PANIC| x"), some("PANIC", 21));
        assert_eq!(lv("CRITICAL ERR"), some("CRITICAL", 21));
        assert_eq!(lv("a b c d e ERROR too late"), (None, 0));
        assert_eq!(lv("error: lower case is no level word"), (None, 0));
        assert_eq!(lv("INFORMATION"), (None, 0));
        assert_eq!(lv("GET /x level=warn"), some("warn", 13));
        assert_eq!(lv(r#"GET /x level="debug""#), some("debug", 5));
        assert_eq!(lv("GET /x loglevel=error"), some("error", 17));
        assert_eq!(lv("GET /x level=loud"), some("loud", 0));
        assert_eq!(lv("GET /x level= y"), (None, 0));
        assert_eq!(lv(""), (None, 0));
        // the level word must be among the first 120 characters (here it is cut off)
        assert_eq!(lv(&format!("{} ERROR", "é".repeat(118))), (None, 0));
    }

    #[test]
    fn plain_text_trace_ids() {
        let p = parse(&format!("done in 5ms trace_id={} spanId: \"{SPAN}\"", TRACE.to_uppercase()));
        assert_eq!((p.trace.as_deref(), p.span.as_deref(), p.flags), (Some(TRACE), Some(SPAN), None));
        let p = parse("dd.trace_id=1234 dd.span_id=5678 x");
        assert_eq!((p.trace.as_deref(), p.span.as_deref()), (Some("000000000000000000000000000004d2"), Some("000000000000162e")));
        let p = parse(&format!("GET /x traceparent: 00-{TRACE}-{SPAN}-03"));
        assert_eq!((p.trace.as_deref(), p.span.as_deref(), p.flags), (Some(TRACE), Some(SPAN), Some(3)));
        for none in ["trace_id=xyz", "trace_id=4bf92f3577b34da6a3ce929d0e0e47", "00-short-00-01", "my trace ended"] {
            let p = parse(none);
            assert_eq!((p.trace, p.span), (None, None), "{none}");
        }
    }

    #[test]
    fn otel_shaped_line() {
        let p = parse(r#"{"timeUnixNano":"1704164645000000007","observedTimeUnixNano":"1","severityNumber":14,"severityText":"WARN2",
                        "body":{"stringValue":"disk almost full"},"flags":1,"traceId":"4BF92F3577B34DA6A3CE929D0E0E4736",
                        "attributes":[{"key":"disk","value":{"stringValue":"/dev/sda"}},{"key":"n","value":{"intValue":"7"}}],
                        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"disk":"old"}"#);
        assert_eq!((p.body.as_str(), p.level.as_deref(), p.number, p.flags), ("disk almost full", Some("WARN2"), 14, Some(1)));
        assert_eq!(p.time, Some((r#""1704164645000000007""#.to_string(), Some(1_704_164_645_000_000_007))));
        assert_eq!(p.trace.as_deref(), Some(TRACE));
        assert_eq!(p.resource, Some(kv(&[("service.name", r#""shop""#)])));
        assert_eq!(p.attrs, kv(&[("observedTimeUnixNano", r#""1""#), ("disk", r#""/dev/sda""#), ("n", "7")]));
    }

    #[test]
    fn otel_zero_time_is_unset_and_generic_names_are_plain_fields_elsewhere() {
        let p = parse(r#"{"timeUnixNano":"0","observedTimeUnixNano":0,"severityText":"info","body":"b"}"#);
        assert_eq!((p.body.as_str(), p.time.is_none(), p.attrs.len(), p.number), ("b", true, 0, 9));
        let line = r#"{"body":"x","flags":1,"attributes":{"a":1}}"#;
        let p = parse(line);
        assert_eq!((p.body.as_str(), p.flags), (line, None));
        assert_eq!(p.attrs, kv(&[("body", r#""x""#), ("flags", "1"), ("attributes", r#"{"a":1}"#)]));
        // the OTel number is the record's, whatever its text says
        assert_eq!(parse(r#"{"severity_number":"SEVERITY_NUMBER_ERROR2","level":"info"}"#).number, 18);
        // an unusable number is an ordinary field
        let p = parse(r#"{"severityNumber":99,"level":"info"}"#);
        assert_eq!((p.number, p.attrs), (9, kv(&[("severityNumber", "99")])));
    }

    #[test]
    fn huge_and_empty_lines() {
        let line = format!(r#"{{"msg":"{}","level":"info"}}"#, "x".repeat(1 << 20));
        let p = parse(&line);
        assert_eq!((p.body.len(), p.number), (1 << 20, 9));
        let p = parse("");
        assert_eq!((p.body.as_str(), p.level, p.attrs.len(), p.non_object), ("", None, 0, false));
        let long = "k=v ".repeat(1 << 16);
        // one key repeated is one field, and a single field is no logfmt: the line stays plain text
        let p = parse(&long);
        assert_eq!((p.body.len(), p.attrs.len()), (long.len(), 0));
    }
}
