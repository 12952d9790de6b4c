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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(presets: &[&str], custom: &[&str]) -> Result<Option<Regex>, String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        compile_rules(&s(presets), &s(custom))
    }

    fn preset(name: &str) -> Regex {
        rules(&[name], &[]).expect("preset").expect("a rule")
    }

    fn joiner(presets: &[&str], max_bytes: usize, flush_ms: u64) -> MultilineJoiner {
        MultilineJoiner::new(rules(presets, &[]).expect("rules").expect("a rule"), max_bytes, flush_ms)
    }

    /// Feed stdout lines at offsets 0, 10, 20, … (each 10 bytes long, time = index); the events completed.
    fn feed_all(j: &mut MultilineJoiner, lines: &[&str]) -> Vec<(i64, i64, i64, String, u32)> {
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let off = i as i64 * 10;
            out.extend(j.feed(off, off + 10, i as i64, Some(Stream::Stdout), l.as_bytes(), 0, false, 0.0).map(ev));
        }
        out
    }

    /// (offset, end, time, text, lines)
    fn ev(e: Event) -> (i64, i64, i64, String, u32) {
        (e.offset, e.end, e.time_ns, String::from_utf8(e.text).expect("UTF-8"), e.lines)
    }

    #[test]
    fn compile_rules_errors_and_none() {
        assert!(rules(&[], &[]).expect("ok").is_none());
        assert_eq!(rules(&["java", "cobol"], &[]).err().as_deref(),
                   Some("unknown multiline preset cobol; known: java, python, go"));
        let err = rules(&[], &["("]).expect_err("bad regex");
        assert!(err.starts_with(r#"multiline pattern "(" is not a valid regex: "#), "{err}");
    }

    #[test]
    fn custom_patterns_are_anchored_at_the_line_start() {
        let re = rules(&[], &["at", r"\s+\|"]).expect("ok").expect("rule");
        assert!(re.is_match(b"at x") && re.is_match(b"attic") && re.is_match(b"   | cont"));
        assert!(!re.is_match(b"x at") && !re.is_match(b"a | b") && !re.is_match(b""));
        // an alternation inside a custom pattern is anchored as a whole
        let alt = rules(&[], &["foo|bar"]).expect("ok").expect("rule");
        assert!(alt.is_match(b"bar!") && !alt.is_match(b"xbar"));
    }

    #[test]
    fn java_preset() {
        let re = preset("java");
        for yes in ["\tat com.x.Y.f(Y.java:1)", "    at java.base/java.lang.Thread.run(Thread.java:833)", "\t... 12 more",
                    "Caused by: java.io.IOException: boom", "\tSuppressed: x.Y: z"] {
            assert!(re.is_match(yes.as_bytes()), "{yes:?}");
        }
        for no in ["at com.x.Y.f(Y.java:1)", "Exception in thread \"main\" java.lang.X", "2024-01-02 INFO started",
                   "\tatom", "caused by: x", "\t... more", "", "  Caused by: x"] {
            assert!(!re.is_match(no.as_bytes()), "{no:?}");
        }
    }

    #[test]
    fn python_preset() {
        let re = preset("python");
        for yes in ["Traceback (most recent call last):", "  File \"a.py\", line 1, in <module>", "    f()",
                    "ValueError: bad", "KeyError", "requests.exceptions.HTTPError: 500", "KeyboardInterrupt",
                    "SystemExit: 2", "UserWarning: careful", "Error: x", "",
                    "During handling of the above exception, another exception occurred:",
                    "The above exception was the direct cause of the following exception:"] {
            assert!(re.is_match(yes.as_bytes()), "{yes:?}");
        }
        for no in ["ERROR handler failed", "ErrorHandler started", "Exiting now", "INFO ok", "Traceback", "x ValueError: y"] {
            assert!(!re.is_match(no.as_bytes()), "{no:?}");
        }
    }

    #[test]
    fn go_preset() {
        let re = preset("go");
        for yes in ["", "goroutine 1 [running]:", "main.main()", "main.(*T).f(0xc000010000, 0x1)",
                    "\t/src/x.go:12 +0x1d", "exit status 2", "[signal SIGSEGV: segmentation violation code=0x1]",
                    "created by main.start in goroutine 1"] {
            assert!(re.is_match(yes.as_bytes()), "{yes:?}");
        }
        for no in ["panic: boom", "goroutine started", "2024/01/02 03:04:05 listening", "exit status x"] {
            assert!(!re.is_match(no.as_bytes()), "{no:?}");
        }
    }

    #[test]
    fn java_stack_trace_is_one_event() {
        let mut j = joiner(&["java"], 1 << 10, 1000);
        let done = feed_all(&mut j, &["Exception in thread \"main\" java.lang.IllegalStateException: x",
                                      "\tat a.B.c(B.java:1)", "\tat a.B.main(B.java:9)",
                                      "Caused by: java.io.IOException: y", "\t... 2 more", "INFO next"]);
        assert_eq!(done, [(0, 50, 0, "Exception in thread \"main\" java.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\
                                       \tat a.B.main(B.java:9)\nCaused by: java.io.IOException: y\n\t... 2 more".to_string(), 5)]);
        assert_eq!(j.oldest_offset(), Some(50));
        assert_eq!(j.drain().into_iter().map(ev).collect::<Vec<_>>(), [(50, 60, 5, "INFO next".to_string(), 1)]);
        assert_eq!(j.oldest_offset(), None);
    }

    #[test]
    fn python_traceback_joins_the_line_before_it() {
        let mut j = joiner(&["python"], 1 << 10, 1000);
        let done = feed_all(&mut j, &["ERROR request failed", "Traceback (most recent call last):",
                                      "  File \"app.py\", line 3, in <module>", "    main()", "ZeroDivisionError: division by zero",
                                      "INFO next", "INFO after"]);
        assert_eq!(done, [(0, 50, 0, "ERROR request failed\nTraceback (most recent call last):\n  File \"app.py\", line 3, in \
                                       <module>\n    main()\nZeroDivisionError: division by zero".to_string(), 5),
                          (50, 60, 5, "INFO next".to_string(), 1)]);
    }

    #[test]
    fn go_panic_keeps_its_empty_lines() {
        let mut j = joiner(&["go"], 1 << 10, 1000);
        let done = feed_all(&mut j, &["panic: boom", "", "goroutine 1 [running]:", "main.main()", "\t/src/x.go:12 +0x1d",
                                      "exit status 2", "next"]);
        assert_eq!(done, [(0, 60, 0, "panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/x.go:12 +0x1d\nexit status 2"
                                       .to_string(), 6)]);
    }

    #[test]
    fn a_continuation_with_nothing_open_starts_an_event() {
        let mut j = joiner(&["java"], 1 << 10, 1000);
        assert!(feed_all(&mut j, &["\tat a.B.c(B.java:1)", "\tat a.B.d(B.java:2)"]).is_empty());
        assert_eq!(j.drain().into_iter().map(ev).collect::<Vec<_>>(),
                   [(0, 20, 0, "\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)".to_string(), 2)]);
    }

    #[test]
    fn one_open_event_per_stream() {
        let mut j = joiner(&["java"], 1 << 10, 1000);
        let mut feed = |off: i64, stream: Option<Stream>, text: &str, flags: i32, truncated: bool| {
            j.feed(off, off + 1, off, stream, text.as_bytes(), flags, truncated, 0.0).map(|e| (e.flags, e.truncated, ev(e)))
        };
        assert!(feed(0, Some(Stream::Stdout), "out head", 1, false).is_none());
        assert!(feed(1, Some(Stream::Stderr), "err head", 0, false).is_none());
        assert!(feed(2, None, "plain head", 0, false).is_none());
        assert!(feed(3, Some(Stream::Stderr), "\tat err", 4, true).is_none());
        assert!(feed(4, Some(Stream::Stdout), "\tat out", 2, false).is_none());
        assert!(feed(5, None, "\tat plain", 0, false).is_none());
        assert_eq!(feed(6, Some(Stream::Stdout), "next", 0, false),
                   Some((3, false, (0, 5, 0, "out head\n\tat out".to_string(), 2))));
        assert_eq!(feed(7, Some(Stream::Stderr), "next", 0, false),
                   Some((4, true, (1, 4, 1, "err head\n\tat err".to_string(), 2))));
        assert_eq!(feed(8, None, "next", 0, false), Some((0, false, (2, 6, 2, "plain head\n\tat plain".to_string(), 2))));
    }

    #[test]
    fn max_bytes_cuts_the_event_and_flags_it() {
        let mut j = joiner(&["java"], 10, 1000);
        assert!(j.feed(0, 1, 0, None, b"abcdef", 0, false, 0.0).is_none());
        assert!(j.feed(1, 2, 0, None, b"  at ghij", 0, false, 0.0).is_none());
        assert!(j.feed(2, 3, 0, None, b"  at klm", 0, false, 0.0).is_none());
        let e = j.feed(3, 4, 0, None, b"next", 0, false, 0.0).expect("event");
        assert_eq!((e.truncated, e.lines, e.end), (true, 3, 3));
        assert_eq!(e.text, b"abcdef\n  a");
        // a first line over the limit is kept whole (the record's own limit applies later); what follows is dropped
        let mut j = joiner(&["java"], 4, 1000);
        assert!(j.feed(0, 1, 0, None, b"0123456789", 0, false, 0.0).is_none());
        assert!(j.feed(1, 2, 0, None, b"  at x", 0, false, 0.0).is_none());
        let e = j.drain().pop().expect("event");
        assert_eq!((e.text.as_slice(), e.truncated, e.lines), (&b"0123456789"[..], true, 2));
    }

    #[test]
    fn expired_after_the_flush_timeout_since_the_last_line() {
        let mut j = joiner(&["java"], 1 << 10, 1000);
        assert!(j.feed(50, 60, 0, Some(Stream::Stdout), b"out", 0, false, 0.0).is_none());
        assert!(j.feed(10, 20, 0, Some(Stream::Stderr), b"err", 0, false, 0.5).is_none());
        assert!(j.feed(60, 70, 0, Some(Stream::Stdout), b"\tat x", 0, false, 0.8).is_none());
        assert!(j.expired(0.9).is_empty());
        assert!(j.expired(1.49).is_empty());
        assert_eq!(j.expired(1.5).into_iter().map(|e| e.offset).collect::<Vec<_>>(), [10]); // exactly the timeout
        assert_eq!(j.oldest_offset(), Some(50));
        assert_eq!(j.expired(1.8).into_iter().map(ev).collect::<Vec<_>>(), [(50, 70, 0, "out\n\tat x".to_string(), 2)]);
        assert!(j.expired(100.0).is_empty() && j.drain().is_empty());
    }

    #[test]
    fn drain_is_oldest_first() {
        let mut j = joiner(&["go"], 1 << 10, 60_000);
        j.feed(30, 31, 0, None, b"c", 0, false, 0.0);
        j.feed(10, 11, 0, Some(Stream::Stderr), b"b", 0, false, 0.0);
        j.feed(20, 21, 0, Some(Stream::Stdout), b"a", 0, false, 0.0);
        assert_eq!(j.drain().into_iter().map(|e| e.offset).collect::<Vec<_>>(), [10, 20, 30]);
    }

    #[test]
    fn invalid_utf8_lines_are_joined_as_bytes() {
        let mut j = joiner(&["java"], 1 << 10, 1000);
        assert!(j.feed(0, 1, 0, None, b"head \xff", 0, false, 0.0).is_none());
        assert!(j.feed(1, 2, 0, None, b"\tat \xfe\xfd", 0, false, 0.0).is_none());
        assert_eq!(j.drain().pop().expect("event").text, b"head \xff\n\tat \xfe\xfd");
    }
}
