"""One source file's lines → wire records (JSON objects of schemas.record.WIRE_SCHEMA).

Per file: detect the format on the first line (CRI, Docker json-file or plain
text), join runtime-split lines, join multi-line events, redact, parse the
text and attach the file's static fields, which are serialised once per file
and spliced into every record.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from schemas.record import (FLAG_BAD_PREFIX, FLAG_INVALID_UTF8, FLAG_NON_OBJECT_JSON, FLAG_PARTIAL,
                            FLAG_REDACTED, FLAG_TRUNCATED)
from shipper import cri, docker
from shipper.enrich import K8sMeta
from shipper.multiline import MultilineJoiner
from shipper.parse import parse_text
from shipper.partial import PartialJoiner, RuntimeLine
from shipper.redact import Redactor

FORMAT_CRI = "cri"
FORMAT_DOCKER = "docker"
FORMAT_PLAIN = "plain"
_RUNTIME_PARSERS: dict[str, Callable[[bytes], RuntimeLine | None]] = {
    FORMAT_CRI: cri.parse_line, FORMAT_DOCKER: docker.parse_line}


def detect_format(first_line: bytes) -> str:
    if first_line.startswith(b'{"log":') and docker.parse_line(first_line) is not None:
        return FORMAT_DOCKER
    return FORMAT_CRI if cri.parse_line(first_line) is not None else FORMAT_PLAIN


def decode_text(raw: bytes) -> tuple[str, int]:
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), FLAG_INVALID_UTF8


@dataclass(frozen=True)
class Processing:
    """What every file's records go through; one per agent."""

    node: str
    max_record_bytes: int
    redactor: Redactor
    multiline: re.Pattern[bytes] | None
    multiline_flush_ms: int
    labels: dict[str, str]


class RecordBuilder:
    """Builds the records of one source; keeps partial-line and multi-line state between reads."""

    def __init__(self, proc: Processing, *, source_id: str, path: str, meta: K8sMeta, fmt: str,
                 counts: Counter[str]) -> None:
        self.proc = proc
        self.fmt = fmt
        self.counts = counts
        self._runtime = _RUNTIME_PARSERS.get(fmt)
        self.joiner = PartialJoiner(proc.max_record_bytes)
        self.multiline = (MultilineJoiner(proc.multiline, proc.max_record_bytes, proc.multiline_flush_ms)
                          if proc.multiline is not None else None)
        static = {"node": proc.node, "namespace": meta.namespace, "pod": meta.pod, "pod_uid": meta.pod_uid,
                  "container": meta.container, "container_id": meta.container_id,
                  "source_id": source_id, "source_path": path}
        # b'"node":"n1",...' — appended after each record's own fields.
        self._static = orjson.dumps({k: v for k, v in static.items() if v is not None})[1:-1]

    def commit_floor(self) -> int | None:
        """Lowest offset still needed: the start of a record being assembled."""
        floors = [self.joiner.oldest_pending_offset(), self.multiline.oldest_offset() if self.multiline else None]
        return min((f for f in floors if f is not None), default=None)

    def build(self, lines: list[bytes], offsets: list[int], end: int, cut: bool = False) -> list[bytes]:
        """Records from complete lines starting at ``offsets``; ``end`` is just past the last one."""
        out: list[bytes] = []
        observed = time.time_ns()
        runtime = self._runtime
        ends = offsets[1:] + [end]
        for line, off, line_end in zip(lines, offsets, ends):
            if line.endswith(b"\r"):
                line = line[:-1]
            if runtime is None:
                self._emit(out, line, off, line_end, observed, None, FLAG_TRUNCATED if cut else 0)
                continue
            parsed = runtime(line)
            if parsed is None:
                self.counts["bad_prefix"] += 1
                self._emit(out, line, off, line_end, observed, None,
                           FLAG_BAD_PREFIX | (FLAG_TRUNCATED if cut else 0))
                continue
            if cut:
                parsed.partial = False
            joined = self.joiner.feed(off, line_end, parsed)
            if joined is not None:
                self._emit(out, joined.text, joined.offset, joined.end, joined.time_ns, joined.stream,
                           FLAG_TRUNCATED if (joined.truncated or cut) else 0)
        return out

    def _emit(self, out: list[bytes], text: bytes, offset: int, end: int, time_ns: int, stream: str | None,
              flags: int) -> None:
        if self.multiline is None:
            self._append(out, text, offset, end, time_ns, stream, flags)
            return
        ev = self.multiline.feed(offset, end, time_ns, stream, text, bool(flags & FLAG_TRUNCATED))
        if ev is not None:
            self._append(out, b"".join(ev.parts), ev.offset, ev.end, ev.time_ns, ev.stream,
                         flags & ~FLAG_TRUNCATED | (FLAG_TRUNCATED if ev.truncated else 0))

    def expired(self) -> list[bytes]:
        """Multi-line events with no new line for the flush timeout."""
        out: list[bytes] = []
        if self.multiline is not None:
            for ev in self.multiline.expired():
                self._append(out, b"".join(ev.parts), ev.offset, ev.end, ev.time_ns, ev.stream,
                             FLAG_TRUNCATED if ev.truncated else 0)
        return out

    def drain(self) -> list[bytes]:
        """The file is finished: emit records whose end never came, flagged partial."""
        out: list[bytes] = []
        for j in self.joiner.drain():
            self._emit(out, j.text, j.offset, j.end, j.time_ns, j.stream,
                       FLAG_PARTIAL | (FLAG_TRUNCATED if j.truncated else 0))
        if self.multiline is not None:
            for ev in self.multiline.drain():
                self._append(out, b"".join(ev.parts), ev.offset, ev.end, ev.time_ns, ev.stream,
                             FLAG_TRUNCATED if ev.truncated else 0)
        return out

    def _append(self, out: list[bytes], raw: bytes, offset: int, end: int, time_ns: int, stream: str | None,
                flags: int) -> None:
        if not raw:
            # Kept (an empty body) so every byte of the source is accounted for; counted for metrics.
            self.counts["empty_line"] += 1
        if len(raw) > self.proc.max_record_bytes:
            raw, flags = raw[:self.proc.max_record_bytes], flags | FLAG_TRUNCATED
        text, text_flags = decode_text(raw)
        flags |= text_flags
        if b"\x00" in raw:
            self.counts["nul_bytes"] += 1
        if self.proc.redactor:
            text, redacted = self.proc.redactor.apply(text)
            if redacted:
                flags |= FLAG_REDACTED
        p = parse_text(text)
        flags |= p.flags
        if flags:
            for bit, kind in _FLAG_KINDS:
                if flags & bit:
                    self.counts[kind] += 1
        rec: dict = {"time": p.time_ns or time_ns, "observed_time": time_ns,
                     "severity_number": p.severity_number, "body": p.body, "source_offset": offset,
                     "source_end": end, "flags": flags}
        if stream:
            rec["stream"] = stream
        if p.severity_text is not None:
            rec["severity_text"] = p.severity_text
        if p.trace_id:
            rec["trace_id"] = p.trace_id
        if p.span_id:
            rec["span_id"] = p.span_id
        attributes = p.attributes
        if self.proc.labels:
            attributes = orjson.dumps({**self.proc.labels, **orjson.loads(attributes)} if attributes
                                      else self.proc.labels)
        if attributes:
            rec["attributes"] = attributes.decode()
        out.append(orjson.dumps(rec)[:-1] + b"," + self._static + b"}")


_FLAG_KINDS = ((FLAG_TRUNCATED, "truncated"), (FLAG_INVALID_UTF8, "invalid_utf8"), (FLAG_PARTIAL, "partial"),
               (FLAG_NON_OBJECT_JSON, "non_object_json"))
