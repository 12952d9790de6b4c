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
