//! Joining a container line that the runtime split into pieces.
//!
//! CRI writes `P` pieces ended by an `F`; Docker's json-file writes records
//! whose `log` lacks the trailing newline until the last piece. Both become
//! `RuntimeLine`s, joined here per stream (stdout and stderr never mix), keeping
//! at most `max_bytes` of a record: the rest is dropped and the record flagged.

use std::borrow::Cow;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

pub struct RuntimeLine<'a> {
    pub time_ns: i64,
    pub stream: Stream,
    pub partial: bool,
    pub text: Cow<'a, [u8]>,
}

/// One complete container line: its first piece's offset and time, its text, and the
/// offset just past its last piece (pieces of the other stream may sit in between).
pub struct Joined<'a> {
    pub offset: i64,
    pub end: i64,
    pub time_ns: i64,
    pub stream: Stream,
    pub text: Cow<'a, [u8]>,
    pub truncated: bool,
}

struct Pending {
    offset: i64,
    end: i64,
    time_ns: i64,
    text: Vec<u8>,
    truncated: bool,
}

pub struct PartialJoiner {
    max_bytes: usize,
    pending: [Option<Pending>; 2],
}

impl PartialJoiner {
    pub fn new(max_bytes: usize) -> Self {
        PartialJoiner { max_bytes, pending: [None, None] }
    }

    /// Offset a checkpoint must not pass: a partial record still being assembled.
    pub fn oldest_pending_offset(&self) -> Option<i64> {
        self.pending.iter().flatten().map(|p| p.offset).min()
    }

    /// One runtime line occupying bytes [offset, end) of the file.
    pub fn feed<'a>(&mut self, offset: i64, end: i64, line: RuntimeLine<'a>) -> Option<Joined<'a>> {
        let slot = &mut self.pending[line.stream as usize];
        if slot.is_none() && !line.partial && line.text.len() <= self.max_bytes {
            return Some(Joined { offset, end, time_ns: line.time_ns, stream: line.stream, text: line.text,
                                 truncated: false });
        }
        let p = slot.get_or_insert_with(|| Pending { offset, end, time_ns: line.time_ns, text: Vec::new(),
                                                      truncated: false });
        let room = self.max_bytes.saturating_sub(p.text.len());
        if line.text.len() > room {
            p.truncated = true;
        }
        p.text.extend_from_slice(&line.text[..line.text.len().min(room)]);
        p.end = end;
        if line.partial {
            return None;
        }
        let p = slot.take()?;
        Some(Joined { offset: p.offset, end: p.end, time_ns: p.time_ns, stream: line.stream, text: Cow::Owned(p.text),
                      truncated: p.truncated })
    }

    /// Give up on unfinished records (the file ended for good): what we have, oldest first.
    pub fn drain(&mut self) -> Vec<Joined<'static>> {
        let mut out: Vec<Joined<'static>> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|s| {
                self.pending[s as usize].take().map(|p| Joined {
                    offset: p.offset, end: p.end, time_ns: p.time_ns, stream: s, text: Cow::Owned(p.text),
                    truncated: p.truncated,
                })
            })
            .collect();
        out.sort_by_key(|j| j.offset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::SecondCache;
    use crate::{cri, docker};

    fn rl(stream: Stream, partial: bool, time_ns: i64, text: &[u8]) -> RuntimeLine<'_> {
        RuntimeLine { time_ns, stream, partial, text: Cow::Borrowed(text) }
    }

    /// (offset, end, time, stream, text, truncated)
    fn parts(j: Joined) -> (i64, i64, i64, Stream, Vec<u8>, bool) {
        (j.offset, j.end, j.time_ns, j.stream, j.text.into_owned(), j.truncated)
    }

    #[test]
    fn a_full_line_passes_through_borrowed() {
        let mut j = PartialJoiner::new(100);
        let out = j.feed(0, 6, rl(Stream::Stdout, false, 7, b"hello")).expect("full");
        assert!(matches!(out.text, Cow::Borrowed(_)));
        assert_eq!(parts(out), (0, 6, 7, Stream::Stdout, b"hello".to_vec(), false));
        assert_eq!(j.oldest_pending_offset(), None);
    }

    #[test]
    fn pieces_are_joined_with_the_first_offset_and_time() {
        let mut j = PartialJoiner::new(100);
        assert!(j.feed(10, 20, rl(Stream::Stdout, true, 1, b"ab")).is_none());
        assert_eq!(j.oldest_pending_offset(), Some(10));
        assert!(j.feed(20, 30, rl(Stream::Stdout, true, 2, b"")).is_none());
        assert!(j.feed(30, 40, rl(Stream::Stdout, true, 3, b"cd")).is_none());
        let out = j.feed(40, 50, rl(Stream::Stdout, false, 4, b"ef")).expect("joined");
        assert_eq!(parts(out), (10, 50, 1, Stream::Stdout, b"abcdef".to_vec(), false));
        assert_eq!(j.oldest_pending_offset(), None);
    }

    #[test]
    fn streams_never_mix() {
        let mut j = PartialJoiner::new(100);
        assert!(j.feed(0, 10, rl(Stream::Stdout, true, 1, b"out-")).is_none());
        assert!(j.feed(10, 20, rl(Stream::Stderr, true, 2, b"err-")).is_none());
        assert_eq!(j.oldest_pending_offset(), Some(0));
        let err = j.feed(20, 30, rl(Stream::Stderr, false, 3, b"end")).expect("stderr done");
        assert_eq!(parts(err), (10, 30, 2, Stream::Stderr, b"err-end".to_vec(), false));
        let other = j.feed(30, 40, rl(Stream::Stderr, false, 4, b"alone")).expect("stderr full");
        assert_eq!(parts(other), (30, 40, 4, Stream::Stderr, b"alone".to_vec(), false));
        let out = j.feed(40, 50, rl(Stream::Stdout, false, 5, b"end")).expect("stdout done");
        assert_eq!(parts(out), (0, 50, 1, Stream::Stdout, b"out-end".to_vec(), false));
    }

    #[test]
    fn max_bytes_keeps_the_head_and_flags_the_rest() {
        let mut j = PartialJoiner::new(5);
        assert!(!parts(j.feed(0, 1, rl(Stream::Stdout, false, 0, b"12345")).expect("fits")).5);
        // a single full line too long
        assert_eq!(parts(j.feed(1, 2, rl(Stream::Stdout, false, 0, b"123456")).expect("cut")),
                   (1, 2, 0, Stream::Stdout, b"12345".to_vec(), true));
        // pieces: the one that crosses the limit is cut, later ones dropped, ends still tracked
        assert!(j.feed(2, 3, rl(Stream::Stderr, true, 0, b"abc")).is_none());
        assert!(j.feed(3, 4, rl(Stream::Stderr, true, 0, b"defg")).is_none());
        assert!(j.feed(4, 5, rl(Stream::Stderr, true, 0, b"hij")).is_none());
        assert_eq!(parts(j.feed(5, 6, rl(Stream::Stderr, false, 0, b"")).expect("joined")),
                   (2, 6, 0, Stream::Stderr, b"abcde".to_vec(), true));
        // exactly filling the room is not truncation
        assert!(j.feed(6, 7, rl(Stream::Stdout, true, 0, b"abc")).is_none());
        assert_eq!(parts(j.feed(7, 8, rl(Stream::Stdout, false, 0, b"de")).expect("joined")).4, b"abcde".to_vec());
    }

    #[test]
    fn zero_max_bytes() {
        let mut j = PartialJoiner::new(0);
        assert!(!parts(j.feed(0, 1, rl(Stream::Stdout, false, 0, b"")).expect("empty")).5);
        assert_eq!(parts(j.feed(1, 3, rl(Stream::Stdout, false, 0, b"x")).expect("cut")),
                   (1, 3, 0, Stream::Stdout, Vec::new(), true));
    }

    #[test]
    fn drain_gives_unfinished_records_oldest_first() {
        let mut j = PartialJoiner::new(3);
        assert!(j.drain().is_empty());
        assert!(j.feed(10, 20, rl(Stream::Stdout, true, 1, b"out")).is_none());
        assert!(j.feed(20, 30, rl(Stream::Stdout, true, 1, b"more")).is_none());
        assert!(j.feed(5, 9, rl(Stream::Stderr, true, 2, b"e")).is_none());
        let drained: Vec<_> = j.drain().into_iter().map(parts).collect();
        assert_eq!(drained, [(5, 9, 2, Stream::Stderr, b"e".to_vec(), false),
                             (10, 30, 1, Stream::Stdout, b"out".to_vec(), true)]);
        assert_eq!(j.oldest_pending_offset(), None);
        assert!(j.drain().is_empty());
    }

    #[test]
    fn cri_p_and_f_lines_joined() {
        let file = "2024-01-02T03:04:05.000000001Z stdout P Exception in \n\
                    2024-01-02T03:04:05.000000002Z stderr F unrelated\n\
                    2024-01-02T03:04:05.000000003Z stdout P thread \n\
                    2024-01-02T03:04:05.000000004Z stdout F main\n";
        let mut clock = SecondCache::default();
        let mut j = PartialJoiner::new(1 << 10);
        let mut out = Vec::new();
        let mut off = 0i64;
        for line in file.split_inclusive('\n') {
            let end = off + line.len() as i64;
            let parsed = cri::parse_line(line.trim_end_matches('\n').as_bytes(), &mut clock).expect("CRI");
            out.extend(j.feed(off, end, parsed).map(parts));
            off = end;
        }
        let t = 1_704_164_645_000_000_000;
        let (l1, l2) = (54, 50); // bytes of the first two lines, newlines included
        assert_eq!(out, [(l1, l1 + l2, t + 2, Stream::Stderr, b"unrelated".to_vec(), false),
                         (0, off, t + 1, Stream::Stdout, b"Exception in thread main".to_vec(), false)]);
    }

    #[test]
    fn docker_lines_without_newline_joined() {
        let pieces = [r#"{"log":"abc","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
                      r#"{"log":"def","stream":"stdout","time":"2024-01-02T03:04:06Z"}"#,
                      r#"{"log":"ghi\n","stream":"stdout","time":"2024-01-02T03:04:07Z"}"#,
                      r#"{"log":"tail","stream":"stdout","time":"2024-01-02T03:04:08Z"}"#];
        let mut clock = SecondCache::default();
        let mut j = PartialJoiner::new(1 << 10);
        let mut out = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            out.extend(j.feed(i as i64 * 100, i as i64 * 100 + 99, docker::parse_line(p.as_bytes(), &mut clock).expect("docker"))
                .map(parts));
        }
        assert_eq!(out, [(0, 299, 1_704_164_645_000_000_000, Stream::Stdout, b"abcdefghi".to_vec(), false)]);
        assert_eq!(j.oldest_pending_offset(), Some(300));
        let rest: Vec<_> = j.drain().into_iter().map(parts).collect();
        assert_eq!(rest, [(300, 399, 1_704_164_648_000_000_000, Stream::Stdout, b"tail".to_vec(), false)]);
    }

    #[test]
    fn stream_names() {
        assert_eq!((Stream::Stdout.name(), Stream::Stderr.name()), ("stdout", "stderr"));
        assert_eq!((Stream::Stdout as usize, Stream::Stderr as usize), (0, 1));
    }
}
