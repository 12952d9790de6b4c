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
