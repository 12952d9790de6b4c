//! Docker json-file lines: `{"log":"text\n","stream":"stdout","time":"<RFC3339Nano>"}`.
//!
//! Docker splits lines longer than 16 KiB into records whose `log` does not end
//! in a newline; the last piece does. `partial` joins them.

use std::borrow::Cow;

use serde_json::Value;

use crate::partial::{RuntimeLine, Stream};
use crate::timestamp::SecondCache;

/// One json-file record; None if it is not one.
pub fn parse_line(line: &[u8], clock: &mut SecondCache) -> Option<RuntimeLine<'static>> {
    let Value::Object(obj) = serde_json::from_slice::<Value>(line).ok()? else { return None };
    let (Some(Value::String(log)), Some(Value::String(stream)), Some(Value::String(ts))) =
        (obj.get("log"), obj.get("stream"), obj.get("time")) else { return None };
    let stream = match stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let time_ns = clock.parse_ns(ts.as_bytes())?;
    let partial = !log.ends_with('\n');
    let text = if partial { log.as_str() } else { &log[..log.len() - 1] };
    Some(RuntimeLine { time_ns, stream, partial, text: Cow::Owned(text.as_bytes().to_vec()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1_704_164_645_123_456_789;

    fn line(log: &str, stream: &str, time: &str) -> Vec<u8> {
        format!(r#"{{"log":{},"stream":"{stream}","time":"{time}"}}"#, serde_json::to_string(log).expect("str"))
            .into_bytes()
    }

    fn parse(line: &[u8]) -> Option<(i64, Stream, bool, Vec<u8>)> {
        parse_line(line, &mut SecondCache::default()).map(|l| (l.time_ns, l.stream, l.partial, l.text.into_owned()))
    }

    #[test]
    fn full_line_loses_its_newline() {
        let l = br#"{"log":"hello world\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}"#;
        assert_eq!(parse(l), Some((NS, Stream::Stdout, false, b"hello world".to_vec())));
        assert_eq!(parse(&line("err\n", "stderr", "2024-01-02T03:04:05.123456789Z")),
                   Some((NS, Stream::Stderr, false, b"err".to_vec())));
    }

    #[test]
    fn a_log_without_trailing_newline_is_partial() {
        assert_eq!(parse(&line("first 16 KiB", "stdout", "2024-01-02T03:04:05.123456789Z")),
                   Some((NS, Stream::Stdout, true, b"first 16 KiB".to_vec())));
        assert_eq!(parse(&line("", "stdout", "2024-01-02T03:04:05.123456789Z")).map(|p| (p.2, p.3)), Some((true, Vec::new())));
        assert_eq!(parse(&line("\n", "stdout", "2024-01-02T03:04:05.123456789Z")).map(|p| (p.2, p.3)), Some((false, Vec::new())));
    }

    #[test]
    fn only_one_newline_is_taken_and_escapes_are_decoded() {
        let t = "2024-01-02T03:04:05.123456789Z";
        assert_eq!(parse(&line("a\n\n", "stdout", t)).map(|p| p.3), Some(b"a\n".to_vec()));
        assert_eq!(parse(&line("crlf\r\n", "stdout", t)).map(|p| p.3), Some(b"crlf\r".to_vec()));
        let l = br#"{"log":"tab\there \"q\" \\ caf\u00e9 \ud83d\ude00 \u0000\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#;
        assert_eq!(parse(l).map(|p| p.3), Some("tab\there \"q\" \\ café 😀 \0".as_bytes().to_vec()));
    }

    #[test]
    fn fields_in_any_order_with_extra_fields_and_whitespace() {
        let l = br#" { "time" : "2024-01-02T05:04:05.123456789+02:00", "attrs": {"tag": "x"}, "stream": "stderr", "log": "x\n" } "#;
        assert_eq!(parse(l), Some((NS, Stream::Stderr, false, b"x".to_vec())));
    }

    #[test]
    fn not_json_file_records() {
        let t = "2024-01-02T03:04:05Z";
        let bad: Vec<Vec<u8>> = vec![
            b"".to_vec(), b"{}".to_vec(), b"[]".to_vec(), b"null".to_vec(), b"\"log\"".to_vec(),
            b"{\"log\":\"x\\n\",\"stream\":\"stdout\"}".to_vec(),                      // no time
            b"{\"log\":\"x\\n\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(),          // no stream
            b"{\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(),     // no log
            b"{\"log\":1,\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(),
            b"{\"log\":\"x\",\"stream\":1,\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(),
            b"{\"log\":\"x\",\"stream\":\"stdout\",\"time\":1704164645}".to_vec(),
            b"{\"log\":null,\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(),
            line("x\n", "stdin", t), line("x\n", "STDOUT", t), line("x\n", "stdout", "yesterday"),
            line("x\n", "stdout", "2024-01-02T03:04:05"), line("x\n", "stdout", ""),
            b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"".to_vec(), // truncated
            b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}{}".to_vec(), // trailing
            b"2024-01-02T03:04:05Z stdout F x".to_vec(),
            b"{\"log\":\"\xff\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(), // invalid UTF-8
            b"{\"log\":\"\\ud800\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(), // lone surrogate
        ];
        for l in bad {
            assert!(parse(&l).is_none(), "{:?}", String::from_utf8_lossy(&l));
        }
    }

    #[test]
    fn huge_log() {
        let log = "y".repeat(1 << 20) + "\n";
        let parsed = parse(&line(&log, "stdout", "2024-01-02T03:04:05.123456789Z")).expect("docker");
        assert_eq!((parsed.2, parsed.3.len()), (false, 1 << 20));
    }
}
