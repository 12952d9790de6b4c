//! Kubernetes CRI log lines: `<RFC3339Nano> <stdout|stderr> <P|F> <text>`.
//!
//! A container line longer than the runtime's buffer arrives as several `P`
//! (partial) lines ended by one `F` (full) line; `partial` reassembles them.

use std::borrow::Cow;

use crate::partial::{RuntimeLine, Stream};
use crate::timestamp::SecondCache;

/// One CRI line (without its newline); None if the prefix is malformed.
pub fn parse_line<'a>(line: &'a [u8], clock: &mut SecondCache) -> Option<RuntimeLine<'a>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (ts, stream, tag) = (parts.next()?, parts.next()?, parts.next()?);
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let time_ns = clock.parse_ns(ts)?;
    Some(RuntimeLine { time_ns, stream, partial, text: Cow::Borrowed(parts.next().unwrap_or(b"")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2024-01-02T03:04:05.123456789Z";
    const NS: i64 = 1_704_164_645_123_456_789;

    fn parse(line: &[u8]) -> Option<(i64, Stream, bool, Vec<u8>)> {
        parse_line(line, &mut SecondCache::default()).map(|l| (l.time_ns, l.stream, l.partial, l.text.into_owned()))
    }

    #[test]
    fn full_and_partial_lines_of_both_streams() {
        assert_eq!(parse(format!("{TS} stdout F hello world").as_bytes()),
                   Some((NS, Stream::Stdout, false, b"hello world".to_vec())));
        assert_eq!(parse(format!("{TS} stderr P first half ").as_bytes()),
                   Some((NS, Stream::Stderr, true, b"first half ".to_vec())));
        // the text is everything after the third space, its own spaces and tabs included
        assert_eq!(parse(format!("{TS} stdout F   a\tb  ").as_bytes()).map(|p| p.3), Some(b"  a\tb  ".to_vec()));
    }

    #[test]
    fn text_is_borrowed_and_kept_byte_for_byte() {
        let line = [format!("{TS} stdout F ").as_bytes(), b"\xff\xfe \x00 caf\xc3\xa9\r"].concat();
        let parsed = parse_line(&line, &mut SecondCache::default()).expect("CRI");
        assert!(matches!(parsed.text, Cow::Borrowed(_)));
        assert_eq!(&*parsed.text, b"\xff\xfe \x00 caf\xc3\xa9\r");
    }

    #[test]
    fn empty_text() {
        assert_eq!(parse(format!("{TS} stdout F").as_bytes()), Some((NS, Stream::Stdout, false, Vec::new())));
        assert_eq!(parse(format!("{TS} stdout F ").as_bytes()), Some((NS, Stream::Stdout, false, Vec::new())));
        assert_eq!(parse(format!("{TS} stderr P").as_bytes()), Some((NS, Stream::Stderr, true, Vec::new())));
    }

    #[test]
    fn any_rfc3339_time_in_the_prefix() {
        assert_eq!(parse(b"2024-01-02T05:04:05.123456789+02:00 stdout F x").map(|p| p.0), Some(NS));
        assert_eq!(parse(b"2024-01-02T03:04:05Z stdout F x").map(|p| p.0), Some(NS - 123_456_789));
    }

    #[test]
    fn malformed_prefixes() {
        let bad: Vec<Vec<u8>> = vec![
            b"".to_vec(), b" ".to_vec(), TS.as_bytes().to_vec(), format!("{TS} ").into_bytes(),
            format!("{TS} stdout").into_bytes(), format!("{TS} stdout ").into_bytes(),
            format!("{TS} stdin F x").into_bytes(), format!("{TS} STDOUT F x").into_bytes(),
            format!("{TS} stdout f x").into_bytes(), format!("{TS} stdout p x").into_bytes(),
            format!("{TS} stdout PF x").into_bytes(), format!("{TS} stdout X x").into_bytes(),
            format!("{TS}  stdout F x").into_bytes(), format!("{TS} stdout  F x").into_bytes(),
            format!("{TS}\tstdout\tF\tx").into_bytes(), format!(" {TS} stdout F x").into_bytes(),
            b"2024-01-02T03:04:05.123456789 stdout F x".to_vec(), b"2024-13-02T03:04:05Z stdout F x".to_vec(),
            b"1704164645 stdout F x".to_vec(), b"hello world, this is plain text".to_vec(),
            b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}".to_vec(),
            b"\xff\xfe\xfd stdout F x".to_vec(),
        ];
        for line in bad {
            assert!(parse(&line).is_none(), "{:?}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn huge_line() {
        let text = vec![b'x'; 4 << 20];
        let line = [format!("{TS} stdout F ").as_bytes(), &text].concat();
        let parsed = parse_line(&line, &mut SecondCache::default()).expect("CRI");
        assert_eq!((parsed.text.len(), parsed.partial), (text.len(), false));
    }
}
