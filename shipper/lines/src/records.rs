//! One source file's bytes → wire records (JSON objects of schemas.record.WIRE_SCHEMA).
//!
//! Per file: the format detected on the first line (CRI, Docker json-file or
//! plain text), runtime-split lines joined, multi-line events joined, the text
//! redacted and parsed. The file's own fields (namespace, pod, source id, …) are
//! not repeated in each record: they travel once per batch (schemas/wire.py).
//! So does the file's resource (restart count, container name and labels); a
//! record carries a resource of its own only when its line has one (an
//! OpenTelemetry record's), merged with the file's.

use std::borrow::Cow;

use memchr::memchr;
use regex::bytes::Regex;

use std::sync::Arc;

use crate::json::{read_top, write_int, write_str, Fields, Top};
use crate::multiline::{Event, MultilineJoiner};
use crate::otel::write_object;
use crate::parse::Parser;
use crate::partial::{Joined, PartialJoiner, Stream};
use crate::redact::Redactor;
use crate::timestamp::{SecondCache, Window};
use crate::{cri, docker};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Docker,
    Plain,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Cri => "cri",
            Format::Docker => "docker",
            Format::Plain => "plain",
        }
    }
}

pub fn detect_format(first_line: &[u8]) -> Format {
    let mut clock = SecondCache::default();
    if first_line.starts_with(b"{\"log\":") && docker::parse_line(first_line, &mut clock).is_some() {
        Format::Docker
    } else if cri::parse_line(first_line, &mut clock).is_some() {
        Format::Cri
    } else {
        Format::Plain
    }
}

/// Record flag bits, from schemas.record.
#[derive(Clone, Copy)]
pub struct Flags {
    pub truncated: i32,
    pub invalid_utf8: i32,
    pub partial: i32,
    pub bad_prefix: i32,
    pub non_object_json: i32,
    pub redacted: i32,
    pub time_claimed: i32,
}

/// Input problems counted for metrics, by kind.
pub const KINDS: [&str; 8] = ["bad_prefix", "empty_line", "nul_bytes", "truncated", "invalid_utf8", "partial",
                              "non_object_json", "time_claimed"];
const BAD_PREFIX: usize = 0;
const EMPTY_LINE: usize = 1;
const NUL_BYTES: usize = 2;

/// What every file's records go through; one per agent.
pub struct Processing {
    pub max_record_bytes: usize,
    pub redactor: Redactor,
    pub multiline: Option<Regex>,
    pub multiline_flush_ms: u64,
    pub labels: Vec<(String, String)>,
    pub flags: Flags,
    pub parser: Parser,
    /// Where a line's own time is believed, around the runtime's.
    pub event_time: Window,
    /// The attribute that keeps a time claim not believed (schemas.record.CLAIMED_TIME_ATTRIBUTE).
    pub claimed_time_attribute: String,
}

pub struct Builder {
    proc: Arc<Processing>,
    pub fmt: Format,
    // The file's resource attributes: (name, JSON value), e.g. ("k8s.container.restart_count", "2").
    resource: Vec<(String, String)>,
    joiner: PartialJoiner,
    // Records already out that span lines of other records (pieces of a split line, a joined
    // multi-line event): a read resumed inside one would take its later pieces for new records.
    spans: Vec<(i64, i64)>,
    multiline: Option<MultilineJoiner>,
    runtime_clock: SecondCache,
    text_clock: SecondCache,
    pub counts: [u64; KINDS.len()],
    pub redactions: Vec<u64>,
}

/// Records are appended to one buffer, each followed by a newline; `ends` marks where each one stops
/// (just past its newline).
#[derive(Default)]
pub struct Out {
    pub buf: Vec<u8>,
    pub ends: Vec<u32>,
}

/// A JSON object's members as (name, JSON value text); None if `json` is not an object.
pub fn object_members(json: &str) -> Option<Vec<(String, String)>> {
    let Some(Top::Object(fields)) = read_top(json) else { return None };
    Some(fields.into_iter().map(|(k, v)| {
        let mut text = Vec::new();
        v.write(&mut text);
        (k.into_owned(), String::from_utf8(text).expect("written from UTF-8"))
    }).collect())
}

impl Builder {
    /// `resource`: the file's resource attributes (name, JSON value), which a record's own resource adds to.
    pub fn new(proc: Arc<Processing>, fmt: Format, resource: Vec<(String, String)>) -> Self {
        Builder {
            fmt,
            resource,
            joiner: PartialJoiner::new(proc.max_record_bytes),
            spans: Vec::new(),
            multiline: proc.multiline.clone()
                .map(|re| MultilineJoiner::new(re, proc.max_record_bytes, proc.multiline_flush_ms)),
            runtime_clock: SecondCache::default(),
            text_clock: SecondCache::default(),
            counts: [0; KINDS.len()],
            redactions: vec![0; proc.redactor.names().len()],
            proc,
        }
    }

    /// Lowest offset a read may resume from: the start of a record being assembled, moved back
    /// to the start of any record already out whose pieces lie on both sides of it.
    pub fn commit_floor(&mut self) -> Option<i64> {
        let Some(mut floor) = [self.joiner.oldest_pending_offset(),
                               self.multiline.as_ref().and_then(MultilineJoiner::oldest_offset)]
            .into_iter().flatten().min() else {
            self.spans.clear();
            return None;
        };
        while let Some(&(start, _)) = self.spans.iter().find(|&&(s, e)| s < floor && floor < e) {
            floor = start;
        }
        self.spans.retain(|&(_, e)| e > floor);
        Some(floor)
    }

    /// Records from `data`, complete lines read from offset `start` (each ends with a newline, except
    /// the head of an overlong line when `cut`). `observed` stands in for the runtime's time (plain files);
    /// `now` is the monotonic clock for multi-line flushing. Returns the number of lines.
    pub fn build(&mut self, data: &[u8], start: i64, cut: bool, observed: i64, now: f64, out: &mut Out) -> usize {
        let (mut pos, mut lines) = (0, 0);
        let flags = self.proc.flags;
        // Records come out a little larger than the lines they were made from.
        out.buf.reserve(data.len() + data.len() / 2 + 4096);
        let cut_flag = if cut { flags.truncated } else { 0 };
        while pos < data.len() {
            let next = memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i + 1);
            let mut line = &data[pos..next];
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            let (off, end) = (start + pos as i64, start + next as i64);
            pos = next;
            lines += 1;
            let parsed = match self.fmt {
                Format::Plain => {
                    self.emit(out, Cow::Borrowed(line), off, end, observed, None, cut_flag, now);
                    continue;
                }
                Format::Cri => cri::parse_line(line, &mut self.runtime_clock),
                Format::Docker => docker::parse_line(line, &mut self.runtime_clock),
            };
            let Some(mut parsed) = parsed else {
                self.counts[BAD_PREFIX] += 1;
                self.emit(out, Cow::Borrowed(line), off, end, observed, None, flags.bad_prefix | cut_flag, now);
                continue;
            };
            if cut {
                parsed.partial = false;
            }
            if let Some(j) = self.joiner.feed(off, end, parsed) {
                if j.offset < off {
                    self.spans.push((j.offset, j.end));
                }
                let f = if j.truncated || cut { flags.truncated } else { 0 };
                self.emit_joined(out, j, f, now);
            }
        }
        lines
    }

    fn emit_joined(&mut self, out: &mut Out, j: Joined, flags: i32, now: f64) {
        self.emit(out, j.text, j.offset, j.end, j.time_ns, Some(j.stream), flags, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(&mut self, out: &mut Out, text: Cow<[u8]>, offset: i64, end: i64, time_ns: i64, stream: Option<Stream>,
            flags: i32, now: f64) {
        let trunc = self.proc.flags.truncated;
        let Some(ml) = self.multiline.as_mut() else {
            return self.append(out, &text, offset, end, time_ns, stream, flags);
        };
        if let Some(ev) = ml.feed(offset, end, time_ns, stream, &text, flags & !trunc, flags & trunc != 0, now) {
            self.append_event(out, ev);
        }
    }

    fn append_event(&mut self, out: &mut Out, ev: Event) {
        if ev.lines > 1 {
            self.spans.push((ev.offset, ev.end));
        }
        let flags = ev.flags | if ev.truncated { self.proc.flags.truncated } else { 0 };
        self.append(out, &ev.text, ev.offset, ev.end, ev.time_ns, ev.stream, flags);
    }

    /// Multi-line events with no new line for the flush timeout.
    pub fn expired(&mut self, now: f64, out: &mut Out) {
        let events = self.multiline.as_mut().map(|m| m.expired(now)).unwrap_or_default();
        for ev in events {
            self.append_event(out, ev);
        }
    }

    /// The file is finished: records whose end never came, flagged partial.
    pub fn drain(&mut self, now: f64, out: &mut Out) {
        let flags = self.proc.flags;
        for j in self.joiner.drain() {
            let f = flags.partial | if j.truncated { flags.truncated } else { 0 };
            self.emit_joined(out, j, f, now);
        }
        let events = self.multiline.as_mut().map(MultilineJoiner::drain).unwrap_or_default();
        for ev in events {
            self.append_event(out, ev);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn append(&mut self, out: &mut Out, raw: &[u8], offset: i64, end: i64, time_ns: i64, stream: Option<Stream>,
              mut flags: i32) {
        let proc: &Processing = &self.proc;
        let f = proc.flags;
        if raw.is_empty() {
            // Kept (an empty body) so every byte of the source is accounted for; counted for metrics.
            self.counts[EMPTY_LINE] += 1;
        }
        let raw = if raw.len() > proc.max_record_bytes {
            flags |= f.truncated;
            &raw[..proc.max_record_bytes]
        } else {
            raw
        };
        let mut text = match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => {
                flags |= f.invalid_utf8;
                String::from_utf8_lossy(raw)
            }
        };
        if memchr(0, raw).is_some() {
            self.counts[NUL_BYTES] += 1;
        }
        if !proc.redactor.is_empty() {
            let redacted;
            (text, redacted) = proc.redactor.apply(text, &mut self.redactions);
            if redacted {
                flags |= f.redacted;
            }
        }
        let mut p = proc.parser.parse(&text, &mut self.text_clock);
        if p.non_object_json {
            flags |= f.non_object_json;
        }
        // The workload's word on its time stands only near the runtime's: a far claim would put the record
        // outside retention or spread it over partitions the lake has to walk.
        let mut time = time_ns;
        if let Some(claim) = p.time.take() {
            match claim.ns.filter(|&t| proc.event_time.admits(t, time_ns)) {
                Some(t) => time = t,
                None => {
                    flags |= f.time_claimed;
                    let name = proc.claimed_time_attribute.as_str();
                    // The line's own field of that name would pass for the shipper's mark: it gives way.
                    p.attributes.retain(|(k, _)| k != name);
                    p.attributes.push((Cow::Borrowed(name), claim.raw));
                }
            }
        }
        for (i, bit) in [(3, f.truncated), (4, f.invalid_utf8), (5, f.partial), (6, f.non_object_json),
                         (7, f.time_claimed)] {
            if flags & bit != 0 {
                self.counts[i] += 1;
            }
        }
        let b = &mut out.buf;
        // Fields at their wire default are left out (schemas/wire.py): observed_time equal to time,
        // severity_number 0, flags 0.
        b.extend_from_slice(b"{\"time\":");
        write_int(b, time);
        if time != time_ns {
            b.extend_from_slice(b",\"observed_time\":");
            write_int(b, time_ns);
        }
        if p.severity_number != 0 {
            b.extend_from_slice(b",\"severity_number\":");
            write_int(b, i64::from(p.severity_number));
        }
        b.extend_from_slice(b",\"body\":");
        write_str(b, &p.body);
        b.extend_from_slice(b",\"source_offset\":");
        write_int(b, offset);
        b.extend_from_slice(b",\"source_end\":");
        write_int(b, end);
        if flags != 0 {
            b.extend_from_slice(b",\"flags\":");
            write_int(b, i64::from(flags));
        }
        if let Some(s) = stream {
            b.extend_from_slice(b",\"stream\":\"");
            b.extend_from_slice(s.name().as_bytes());
            b.push(b'"');
        }
        if let Some(s) = &p.severity_text {
            b.extend_from_slice(b",\"severity_text\":");
            write_str(b, s);
        }
        if let Some(t) = &p.trace_id {
            b.extend_from_slice(b",\"trace_id\":");
            write_str(b, t);
        }
        if let Some(s) = &p.span_id {
            b.extend_from_slice(b",\"span_id\":");
            write_str(b, s);
        }
        if let Some(f) = p.trace_flags {
            b.extend_from_slice(b",\"trace_flags\":");
            write_int(b, i64::from(f));
        }
        if let Some(r) = &p.resource {
            // left out, a record's resource is its file's (schemas/wire.py)
            b.extend_from_slice(b",\"resource\":");
            write_str(b, &resource_json(r, &self.resource));
        }
        if !p.attributes.is_empty() || !proc.labels.is_empty() {
            let attrs = attributes_json(&proc.labels, &p.attributes);
            b.extend_from_slice(b",\"attributes\":");
            write_str(b, &attrs);
        }
        b.extend_from_slice(b"}\n");
        out.ends.push(u32::try_from(b.len()).expect("a read is far below 4 GiB"));
    }
}

/// A record's resource: its line's attributes, then the file's (which win: the shipper saw them, the
/// workload only says them). The names the shipper owns (`k8s.*`, `container.*`) never come from a line,
/// even where the file says nothing of them: a workload must not name itself another container or
/// claim another's labels. A name a line gives twice is kept once (its last), as every JSON reader agrees.
fn resource_json(line: &Fields, file: &[(String, String)]) -> String {
    let owned = |k: &str| k.starts_with("k8s.") || k.starts_with("container.");
    let own: Fields = line
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| {
            !owned(k) && !file.iter().any(|(f, _)| f == k) && !line[i + 1..].iter().any(|(later, _)| later == k)
        })
        .map(|(_, kv)| kv.clone())
        .collect();
    let mut o = Vec::with_capacity(256);
    write_object(&own, &mut o);
    if !file.is_empty() {
        o.pop();
        for (k, v) in file {
            if o.len() > 1 {
                o.push(b',');
            }
            write_str(&mut o, k);
            o.push(b':');
            o.extend_from_slice(v.as_bytes());
        }
        o.push(b'}');
    }
    String::from_utf8(o).expect("written from UTF-8 parts")
}

/// The attributes object: static labels first, then the line's own fields (which win over a label of the same name).
fn attributes_json(labels: &[(String, String)], fields: &Fields) -> String {
    let mut o = Vec::with_capacity(256);
    o.push(b'{');
    for (k, v) in labels {
        write_str(&mut o, k);
        o.push(b':');
        match fields.iter().find(|(fk, _)| fk == k) {
            Some((_, fv)) => fv.write(&mut o),
            None => write_str(&mut o, v),
        }
        o.push(b',');
    }
    for (k, v) in fields.iter().filter(|(k, _)| !labels.iter().any(|(l, _)| l == k)) {
        write_str(&mut o, k);
        o.push(b':');
        v.write(&mut o);
        o.push(b',');
    }
    if o.len() > 1 {
        o.pop();
    }
    o.push(b'}');
    String::from_utf8(o).expect("written from UTF-8 parts")
}

impl Builder {
    pub fn redactor_names(&self) -> Vec<String> {
        self.proc.redactor.names().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_the_first_line() {
        let cases: [(&[u8], Format); 9] = [
            (b"2024-01-02T03:04:05.123456789Z stdout F hello", Format::Cri),
            (b"2024-01-02T03:04:05.123456789Z stderr P", Format::Cri),
            (br#"{"log":"hello\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}"#, Format::Docker),
            // Docker's own field order only: the same record written otherwise is an application's JSON
            (br#"{"stream":"stdout","log":"hello\n","time":"2024-01-02T03:04:05.123456789Z"}"#, Format::Plain),
            (br#"{"log":"hello\n","stream":"stdout"}"#, Format::Plain),
            (b"2024-01-02T03:04:05Z INFO hello", Format::Plain),
            (b"", Format::Plain),
            (b"\xff\xfe", Format::Plain),
            (br#"{"level":"info","msg":"hi"}"#, Format::Plain),
        ];
        for (line, want) in cases {
            assert!(detect_format(line) == want, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!([Format::Cri, Format::Docker, Format::Plain].map(Format::name), ["cri", "docker", "plain"]);
    }

    #[test]
    fn object_members_as_json_text() {
        assert_eq!(object_members(r#"{"k8s.container.restart_count":2,"app":"shop","l":{"a":[1]}}"#),
                   Some(vec![("k8s.container.restart_count".to_string(), "2".to_string()),
                             ("app".to_string(), r#""shop""#.to_string()), ("l".to_string(), r#"{"a":[1]}"#.to_string())]));
        assert_eq!(object_members("{}"), Some(Vec::new()));
        for bad in ["[]", "1", "", "{", r#"{"a":"\ud800"}"#] {
            assert_eq!(object_members(bad), None, "{bad}");
        }
    }
}
