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
