//! The OpenTelemetry log data model written as JSON lines: an SDK's or collector's stdout / file
//! exporter, or an application logging in OTel's shape.
//!
//!     {"timeUnixNano":"1795514400123456789","observedTimeUnixNano":"…","severityNumber":13,
//!      "severityText":"WARN","body":{"stringValue":"disk almost full"},
//!      "attributes":[{"key":"disk","value":{"stringValue":"/dev/sda"}}],
//!      "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
//!      "traceId":"…","spanId":"…","flags":1}
//!
//! OTLP/JSON (the protobuf JSON mapping) spells values as `AnyValue` objects (`{"stringValue": …}`,
//! `{"intValue": "42"}`, …) and attributes as lists of `{key, value}`; the data model's plain form
//! spells both as ordinary JSON. Both are read, and stored as ordinary JSON.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::json::{read_top, representable, write_str, Fields, Top, Val};

/// Names only the OpenTelemetry log data model uses. A JSON line with one of them is read as an OTel
/// record: its generic names `body`, `attributes`, `resource` and `flags` are then the model's fields
/// (in any other line they are application fields like the rest).
pub const MARKS: [&str; 7] = ["timeUnixNano", "observedTimeUnixNano", "severityNumber", "severityText",
                              "time_unix_nano", "observed_time_unix_nano", "severity_number"];

/// Time fields in nanoseconds since the epoch, where 0 means "not set".
pub fn is_unix_nano(key: &str) -> bool {
    matches!(key, "timeUnixNano" | "observedTimeUnixNano" | "time_unix_nano" | "observed_time_unix_nano")
}

/// The text of a number, whether written as a JSON number or (OTLP/JSON's 64-bit integers) a string.
fn number_text<'a>(v: &Val<'a>) -> Option<Cow<'a, str>> {
    v.as_str().or_else(|| v.raw().map(Cow::Borrowed))
}

pub fn is_zero(v: &Val) -> bool {
    number_text(v).is_some_and(|t| t == "0")
}

/// Nanoseconds since the epoch, exactly (no float on the way), from a decimal integer.
pub fn unix_nano(v: &Val) -> Option<i64> {
    let t = number_text(v)?;
    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// OpenTelemetry's SeverityNumber, 0 (unspecified) to 24: a number, or the enum's name as the protobuf
/// JSON mapping may write it (`SEVERITY_NUMBER_WARN2` = 14). None for anything else.
/// `levels`: the first number of TRACE, DEBUG, INFO, WARN, ERROR and FATAL (schemas.record.SEVERITY_NUMBERS,
/// as parse::Parser has them); `…2` to `…4` are the next three.
pub fn severity_number(v: &Val, levels: &[i32; 6]) -> Option<i32> {
    let t = number_text(v)?;
    let n = if let Some(name) = t.strip_prefix("SEVERITY_NUMBER_") {
        let (base, step) = name.find(|c: char| c.is_ascii_digit()).map_or((name, "1"), |i| name.split_at(i));
        let first = match base {
            "UNSPECIFIED" if step == "1" => return Some(0),
            "TRACE" => levels[0], "DEBUG" => levels[1], "INFO" => levels[2], "WARN" => levels[3],
            "ERROR" => levels[4], "FATAL" => levels[5],
            _ => return None,
        };
        match step {
            "1" => first, "2" => first + 1, "3" => first + 2, "4" => first + 3,
            _ => return None,
        }
    } else if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) && t.len() <= 2 {
        t.parse().ok()?
    } else {
        return None;
    };
    (0..=24).contains(&n).then_some(n)
}

/// W3C trace flags (8 bits): OTLP's `flags` (a 32-bit field whose low byte they are) as a number, or
/// two hex digits as in `traceparent`.
pub fn trace_flags(v: &Val) -> Option<u8> {
    if let Some(s) = v.as_str() {
        return (s.len() == 2).then(|| u8::from_str_radix(&s, 16).ok()).flatten();
    }
    let raw = v.raw()?;
    if raw.is_empty() || !raw.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = raw.parse().ok()?;
    (n <= u64::from(u32::MAX)).then_some((n & 0xff) as u8)
}

/// An OTLP/JSON AnyValue as the plain JSON value it stands for; None if `raw` is not an AnyValue.
///
/// `{"stringValue":"a"}` → `"a"`, `{"intValue":"42"}` → `42`, `{"doubleValue":1.5}` → `1.5`,
/// `{"boolValue":true}` → `true`, `{"bytesValue":"AAE="}` → `"AAE="` (base64, as sent),
/// `{"arrayValue":{"values":[…]}}` → `[…]`, `{"kvlistValue":{"values":[{"key":…,"value":…}]}}` → `{…}`.
pub fn any_value(raw: &str) -> Option<String> {
    let mut out = Vec::new();
    write_any(raw, &mut out).then(|| String::from_utf8(out).expect("JSON written from UTF-8"))
}

fn one_field(raw: &str) -> Option<(Cow<'_, str>, &str)> {
    if !raw.starts_with('{') {
        return None;
    }
    let Some(Top::Object(mut fields)) = read_top(raw) else { return None };
    if fields.len() != 1 {
        return None;
    }
    let (k, v) = fields.pop()?;
    Some((k, v.json()?))
}

/// Append the plain value of the AnyValue `raw`; false (and `out` unusable) if it is not one.
fn write_any(raw: &str, out: &mut Vec<u8>) -> bool {
    let Some((kind, value)) = one_field(raw) else { return false };
    match kind.as_ref() {
        "stringValue" | "bytesValue" if value.starts_with('"') => out.extend_from_slice(value.as_bytes()),
        "boolValue" if matches!(value, "true" | "false") => out.extend_from_slice(value.as_bytes()),
        "intValue" => {
            let text = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            if text.parse::<i64>().is_err() {
                return false;
            }
            out.extend_from_slice(text.as_bytes());
        }
        // protobuf's JSON spells the non-finite doubles as strings ("NaN", "Infinity"): kept as strings
        "doubleValue" if !value.starts_with(['{', '[']) => out.extend_from_slice(value.as_bytes()),
        "arrayValue" => {
            let Some(values) = values_of(value) else { return false };
            out.push(b'[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_any(v.get(), out) {
                    out.extend_from_slice(v.get().as_bytes()); // a plain value inside: kept as written
                }
            }
            out.push(b']');
        }
        "kvlistValue" => {
            let Some(values) = values_of(value) else { return false };
            let Some(pairs) = key_values(&values) else { return false };
            write_object(&pairs, out);
        }
        _ => return false,
    }
    true
}

/// `{"values": [...]}` (the list inside arrayValue and kvlistValue); `{}` is an empty list.
fn values_of(raw: &str) -> Option<Vec<&RawValue>> {
    let Some(Top::Object(fields)) = read_top(raw) else { return None };
    match fields.iter().find(|(k, _)| k == "values") {
        None if fields.is_empty() => Some(Vec::new()),
        None => None,
        Some((_, v)) => serde_json::from_str(v.json()?).ok(),
    }
}

/// OTLP's `[{"key": k, "value": AnyValue}, …]` as fields with plain values; None if it is not one.
fn key_values<'a>(list: &[&'a RawValue]) -> Option<Fields<'a>> {
    let mut out: Fields<'a> = Vec::with_capacity(list.len());
    for item in list {
        let Some(Top::Object(kv)) = read_top(item.get()) else { return None };
        let key = kv.iter().find(|(k, _)| k == "key").and_then(|(_, v)| v.as_str())?;
        let value = match kv.iter().find(|(k, _)| k == "value").and_then(|(_, v)| v.json()) {
            None | Some("{}") | Some("null") => Val::Json("null".to_string()),
            Some(raw) => any_value(raw).map_or(Val::Raw(serde_json::from_str(raw).ok()?), Val::Json),
        };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(f) => f.1 = value, // a repeated key: the last value, as JSON parsers take it
            None => out.push((key, value)),
        }
    }
    Some(out)
}

pub fn write_object(fields: &Fields, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        v.write(out);
    }
    out.push(b'}');
}

/// An OTel record's `attributes`: an object (kept as written) or OTLP/JSON's list of `{key, value}`.
/// None if it is neither (it then stays an attribute named "attributes").
pub fn attributes<'a>(v: &Val<'a>) -> Option<Fields<'a>> {
    let raw = v.json()?;
    if raw.starts_with('{') {
        let Some(Top::Object(fields)) = read_top(raw) else { return None };
        return Some(fields);
    }
    if raw.starts_with('[') {
        let list: Vec<&'a RawValue> = serde_json::from_str(raw).ok()?;
        return key_values(&list);
    }
    None
}

/// An OTel record's `resource`: OTLP's `{"attributes": …}` (other members such as
/// droppedAttributesCount are left out) or a plain object of resource attributes.
pub fn resource<'a>(v: &Val<'a>) -> Option<Fields<'a>> {
    let raw = v.json()?;
    if !raw.starts_with('{') || !representable(raw) {
        return None; // stays an attribute named "resource"
    }
    let Some(Top::Object(fields)) = read_top(raw) else { return None };
    match fields.iter().find(|(k, _)| k == "attributes") {
        Some((_, attrs)) => attributes(attrs),
        None => Some(fields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(json: &str) -> Val<'_> {
        Val::Raw(serde_json::from_str(json).expect("test JSON"))
    }

    #[test]
    fn any_values_become_plain_json() {
        for (any, plain) in [(r#"{"stringValue":"a\"b"}"#, r#""a\"b""#), (r#"{"intValue":"-7"}"#, "-7"),
                             (r#"{"intValue":7}"#, "7"), (r#"{"doubleValue":"NaN"}"#, r#""NaN""#),
                             (r#"{"boolValue":true}"#, "true"), (r#"{"bytesValue":"AAE="}"#, r#""AAE=""#),
                             (r#"{"arrayValue":{}}"#, "[]"),
                             (r#"{"arrayValue":{"values":[{"intValue":"1"},{"x":1}]}}"#, r#"[1,{"x":1}]"#),
                             (r#"{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}},{"key":"e"}]}}"#,
                              r#"{"k":"v","e":null}"#)] {
            assert_eq!(any_value(any).as_deref(), Some(plain), "{any}");
        }
        for not_any in [r#"{"stringValue":1}"#, r#"{"intValue":"1.5"}"#, r#"{"a":1,"b":2}"#, "{}", "[1]",
                        r#"{"kvlistValue":{"values":[{"value":{}}]}}"#, r#"{"doubleValue":{}}"#] {
            assert_eq!(any_value(not_any), None, "{not_any}");
        }
    }

    /// schemas.record.SEVERITY_NUMBERS, as Python passes them (TRACE, DEBUG, INFO, WARN, ERROR, FATAL).
    const LEVELS: [i32; 6] = [1, 5, 9, 13, 17, 21];

    #[test]
    fn severity_numbers_and_trace_flags() {
        assert_eq!(severity_number(&val("13"), &LEVELS), Some(13));
        assert_eq!(severity_number(&val(r#""SEVERITY_NUMBER_INFO3""#), &LEVELS), Some(11));
        assert_eq!(severity_number(&val(r#""SEVERITY_NUMBER_UNSPECIFIED""#), &LEVELS), Some(0));
        for (name, n) in [("TRACE", 1), ("DEBUG2", 6), ("INFO", 9), ("WARN4", 16), ("ERROR", 17), ("FATAL4", 24)] {
            assert_eq!(severity_number(&val(&format!(r#""SEVERITY_NUMBER_{name}""#)), &LEVELS), Some(n), "{name}");
        }
        for bad in ["25", "-1", "1.0", r#""SEVERITY_NUMBER_LOUD""#, r#""SEVERITY_NUMBER_INFO0""#,
                    r#""SEVERITY_NUMBER_INFO5""#, r#""SEVERITY_NUMBER_UNSPECIFIED2""#, "true"] {
            assert_eq!(severity_number(&val(bad), &LEVELS), None, "{bad}");
        }
        // the names' numbers are the table's, not written here; the result stays within 0..=24
        let shifted = [2, 6, 10, 14, 18, 21];
        assert_eq!(severity_number(&val(r#""SEVERITY_NUMBER_WARN2""#), &shifted), Some(15));
        assert_eq!(severity_number(&val(r#""SEVERITY_NUMBER_FATAL4""#), &shifted), Some(24));
        assert_eq!(severity_number(&val(r#""SEVERITY_NUMBER_FATAL4""#), &[2, 6, 10, 14, 18, 22]), None);
        assert_eq!(severity_number(&val("7"), &shifted), Some(7)); // a number is taken as written
        assert_eq!(trace_flags(&val("769")), Some(1));
        assert_eq!(trace_flags(&val(r#""0a""#)), Some(10));
        for bad in ["4294967296", "-1", r#""1""#, r#""0x1""#, "1e0"] {
            assert_eq!(trace_flags(&val(bad)), None, "{bad}");
        }
        assert_eq!(unix_nano(&val(r#""1795514400123456789""#)), Some(1_795_514_400_123_456_789));
        assert_eq!(unix_nano(&val("-5")), None);
        assert!(is_zero(&val(r#""0""#)) && is_zero(&val("0")) && !is_zero(&val("0.0")));
    }

    #[test]
    fn resource_forms() {
        let plain = val(r#"{"service.name":"a","n":1}"#);
        let keys = |f: Fields| f.into_iter().map(|(k, _)| k.into_owned()).collect::<Vec<_>>();
        assert_eq!(keys(resource(&plain).expect("object")), ["service.name", "n"]);
        let otlp = val(r#"{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}],"droppedAttributesCount":0}"#);
        assert_eq!(keys(resource(&otlp).expect("otlp")), ["service.name"]);
        assert!(resource(&val(r#""shop""#)).is_none() && attributes(&val("[1]")).is_none());
    }
}
