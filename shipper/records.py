"""One source file's lines → wire records (JSON objects of schemas.record.WIRE_SCHEMA).

Per file: detect the format on the first line (CRI or plain text), join CRI
partial lines, parse the text, attach the file's static fields. The static
fields are serialised once per file and spliced into every record.
"""

from __future__ import annotations

import time

import orjson

from schemas.record import FLAG_BAD_PREFIX, FLAG_INVALID_UTF8, FLAG_PARTIAL, FLAG_TRUNCATED
from shipper import cri
from shipper.enrich import K8sMeta
from shipper.parse import Parsed, parse_text

FORMAT_CRI = "cri"
FORMAT_PLAIN = "plain"


def detect_format(first_line: bytes) -> str:
    return FORMAT_CRI if cri.parse_line(first_line) is not None else FORMAT_PLAIN


def decode_text(raw: bytes) -> tuple[str, int]:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), FLAG_INVALID_UTF8


class RecordBuilder:
    """Builds the records of one source; keeps the partial-line state between reads."""

    def __init__(self, *, node: str, source_id: str, path: str, meta: K8sMeta, fmt: str,
                 max_record_bytes: int) -> None:
        self.fmt = fmt
        self.max_record_bytes = max_record_bytes
        self.joiner = cri.PartialJoiner(max_record_bytes)
        static = {"node": node, "namespace": meta.namespace, "pod": meta.pod, "pod_uid": meta.pod_uid,
                  "container": meta.container, "container_id": meta.container_id,
                  "source_id": source_id, "source_path": path}
        # b'"node":"n1",...' — appended after each record's own fields.
        self._static = orjson.dumps({k: v for k, v in static.items() if v is not None})[1:-1]

    def commit_floor(self) -> int | None:
        """Lowest offset still needed: the start of a partial record being assembled."""
        return self.joiner.oldest_pending_offset()

    def build(self, lines: list[bytes], offsets: list[int], cut: bool = False) -> list[bytes]:
        out: list[bytes] = []
        observed = time.time_ns()
        if self.fmt == FORMAT_CRI:
            for line, off in zip(lines, offsets):
                parsed = cri.parse_line(line)
                if parsed is None:
                    out.append(self._record(line, off, observed, None, observed, FLAG_BAD_PREFIX | (FLAG_TRUNCATED if cut else 0)))
                    continue
                if cut:
                    parsed.partial = False
                joined = self.joiner.feed(off, parsed)
                if joined is not None:
                    flags = FLAG_TRUNCATED if (joined.truncated or cut) else 0
                    out.append(self._record(joined.text, joined.offset, joined.time_ns, joined.stream, observed, flags))
        else:
            flag = FLAG_TRUNCATED if cut else 0
            for line, off in zip(lines, offsets):
                if len(line) > self.max_record_bytes:
                    line, flag = line[:self.max_record_bytes], FLAG_TRUNCATED
                out.append(self._record(line, off, observed, None, observed, flag))
                flag = FLAG_TRUNCATED if cut else 0
        return out

    def drain(self) -> list[bytes]:
        """The file is finished: emit partial records whose end never came, flagged."""
        observed = time.time_ns()
        return [self._record(j.text, j.offset, j.time_ns, j.stream, observed,
                             FLAG_PARTIAL | (FLAG_TRUNCATED if j.truncated else 0))
                for j in self.joiner.drain()]

    def _record(self, raw: bytes, offset: int, runtime_ns: int, stream: str | None,
                observed_ns: int, flags: int) -> bytes:
        text, text_flags = decode_text(raw)
        p: Parsed = parse_text(text)
        rec: dict = {"time": p.time_ns or runtime_ns, "observed_time": runtime_ns if stream else observed_ns,
                     "severity_number": p.severity_number, "body": p.body, "source_offset": offset,
                     "flags": flags | text_flags | p.flags}
        if stream:
            rec["stream"] = stream
        if p.severity_text is not None:
            rec["severity_text"] = p.severity_text
        if p.trace_id:
            rec["trace_id"] = p.trace_id
        if p.span_id:
            rec["span_id"] = p.span_id
        if p.attributes:
            rec["attributes"] = p.attributes.decode()
        return orjson.dumps(rec)[:-1] + b"," + self._static + b"}"
