//! Joining multi-line events (stack traces, panics) into one record.
//!
//! A rule is a "continuation" pattern: a line matching it at its start belongs to
//! the event before it; any other line starts a new event. An event is emitted
//! when the next one starts or when no line has come for the flush timeout.
//! Built-in presets cover Java and Python stack traces and Go panics. One open
//! event per stream.

use regex::bytes::Regex;

use crate::partial::Stream;

pub const PRESETS: [(&str, &str); 3] = [
    // "\tat com.x.Y(Y.java:1)", "\t... 12 more", "Caused by: …", "\tSuppressed: …"
    ("java", r"^\s+at\s|^\s+\.\.\.\s\d+\s+more|^Caused by:|^\s+Suppressed:"),
    // "Traceback (most recent call last):", indented frames, the final "XxxError: …",
    // and the chaining sentences between tracebacks.
    ("python", concat!(r"^Traceback \(most recent call last\):|^\s+\S|^[\w.]*(Error|Exception|Exit|Interrupt|Warning)\b",
                       r"|^During handling of the above exception|^The above exception was the direct cause|^$")),
    // "panic: …" is followed by "", "goroutine N [running]:", "main.f(…)" and "\t/src/x.go:12 +0x1d" lines.
    ("go", r"^$|^goroutine \d+ \[|^\s+\S|^[\w./*()-]+\(.*\)$|^exit status \d+|^\[signal |^created by "),
];

/// One continuation regex from preset names and custom patterns; None when there are none.
pub fn compile_rules(presets: &[String], custom: &[String]) -> Result<Option<Regex>, String> {
    let mut patterns = Vec::new();
    for name in presets {
        match PRESETS.iter().find(|(n, _)| n == name) {
            Some((_, p)) => patterns.push(p.to_string()),
            None => {
                let known: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                return Err(format!("unknown multiline preset {name}; known: {}", known.join(", ")));
            }
        }
    }
    for p in custom {
        Regex::new(p).map_err(|e| format!("multiline pattern {p:?} is not a valid regex: {e}"))?;
        patterns.push(p.clone());
    }
    if patterns.is_empty() {
        return Ok(None);
    }
    let joined: Vec<String> = patterns.iter().map(|p| format!("(?:{p})")).collect();
    // Anchored at the line's start, as a continuation is judged by how a line begins.
    Regex::new(&format!(r"\A(?:{})", joined.join("|"))).map(Some).map_err(|e| e.to_string())
}

pub struct Event {
    pub offset: i64,
    pub end: i64, // just past the last line joined in
    pub time_ns: i64,
    pub stream: Option<Stream>,
    pub text: Vec<u8>,
    pub flags: i32, // of the lines joined in
    pub truncated: bool,
    pub lines: u32,
    last_seen: f64,
}

pub struct MultilineJoiner {
    continuation: Regex,
    max_bytes: usize,
    flush_s: f64,
    open: [Option<Event>; 3],
}

fn slot(stream: Option<Stream>) -> usize {
    stream.map_or(2, |s| s as usize)
}

impl MultilineJoiner {
    pub fn new(continuation: Regex, max_bytes: usize, flush_ms: u64) -> Self {
        MultilineJoiner { continuation, max_bytes, flush_s: flush_ms as f64 / 1000.0, open: [None, None, None] }
    }

    pub fn oldest_offset(&self) -> Option<i64> {
        self.open.iter().flatten().map(|e| e.offset).min()
    }

    /// Add one line; returns the event it completed, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(&mut self, offset: i64, end: i64, time_ns: i64, stream: Option<Stream>, text: &[u8], flags: i32,
                truncated: bool, now: f64) -> Option<Event> {
        let open = &mut self.open[slot(stream)];
        if let Some(ev) = open.as_mut() {
            if self.continuation.is_match(text) {
                let room = self.max_bytes.saturating_sub(ev.text.len());
                let piece_len = text.len() + 1;
                if piece_len > room {
                    ev.truncated = true;
                }
                let mut piece = Vec::with_capacity(piece_len);
                piece.push(b'\n');
                piece.extend_from_slice(text);
                ev.text.extend_from_slice(&piece[..piece_len.min(room)]);
                ev.truncated |= truncated;
                ev.flags |= flags;
                ev.last_seen = now;
                ev.end = end;
                ev.lines += 1;
                return None;
            }
        }
        open.replace(Event { offset, end, time_ns, stream, text: text.to_vec(), flags, truncated, lines: 1, last_seen: now })
    }

    /// Events with no new line for the flush timeout, oldest first.
    pub fn expired(&mut self, now: f64) -> Vec<Event> {
        let flush_s = self.flush_s;
        let mut out: Vec<Event> = self.open.iter_mut()
            .filter(|e| e.as_ref().is_some_and(|e| now - e.last_seen >= flush_s))
            .filter_map(Option::take)
            .collect();
        out.sort_by_key(|e| e.offset);
        out
    }

    pub fn drain(&mut self) -> Vec<Event> {
        self.expired(f64::INFINITY)
    }
}
