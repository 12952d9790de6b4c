"""One source file's bytes → wire records (JSON objects of schemas.record.WIRE_SCHEMA).

The per-line work runs in the native core, ``shipper._lines`` (Rust, built from
``shipper/lines/``): the format detected on the first line (CRI, Docker
json-file or plain text), runtime-split lines joined, multi-line events joined,
redaction and parsing. This module gives it the configuration, pairs its
records with the file's own fields (sent once per batch, schemas.wire: the
Kubernetes fields and the file's ``resource``, its restart count and container
name and labels), and turns its counts into the agent's metrics.
"""

from __future__ import annotations

import time
from collections import Counter

import orjson

from schemas.record import (CLAIMED_TIME_ATTRIBUTE, FLAG_BAD_PREFIX, FLAG_INVALID_UTF8, FLAG_NON_OBJECT_JSON,
                            FLAG_PARTIAL, FLAG_REDACTED, FLAG_TIME_CLAIMED, FLAG_TRUNCATED, SEVERITY_NUMBERS)
from shipper._lines import Processing, RecordBuilder as _Native, detect_format
from shipper.batch import Records
from shipper.config import ShipperConfig
from shipper.enrich import DOCKER_CONFIG_ERROR, K8sMeta
from shipper.tail import Chunk

__all__ = ["RecordBuilder", "detect_format", "processing"]

_FLAGS = {"truncated": FLAG_TRUNCATED, "invalid_utf8": FLAG_INVALID_UTF8, "partial": FLAG_PARTIAL,
          "bad_prefix": FLAG_BAD_PREFIX, "non_object_json": FLAG_NON_OBJECT_JSON, "redacted": FLAG_REDACTED,
          "time_claimed": FLAG_TIME_CLAIMED}


def processing(cfg: ShipperConfig) -> Processing:
    """What every file's records go through; ValueError names an unknown rule or a bad pattern."""
    return Processing(max_record_bytes=cfg.max_record_bytes, redact=list(cfg.redact),
                      redact_patterns=list(cfg.redact_patterns), multiline=list(cfg.multiline),
                      multiline_patterns=list(cfg.multiline_patterns), multiline_flush_ms=cfg.multiline_flush_ms,
                      labels=list(cfg.labels.items()), event_time_max_past_s=cfg.event_time_max_past_s,
                      event_time_max_future_s=cfg.event_time_max_future_s,
                      claimed_time_attribute=CLAIMED_TIME_ATTRIBUTE, flags=_FLAGS, severities=SEVERITY_NUMBERS)


class RecordBuilder:
    """The records of one source; the native builder keeps partial-line and multi-line state between reads."""

    def __init__(self, proc: Processing, *, source_id: str, path: str, meta: K8sMeta, fmt: str,
                 errors: Counter[str], redactions: Counter[str]) -> None:
        attributes = meta.resource()
        resource = orjson.dumps(attributes).decode() if attributes else None
        source = {"namespace": meta.namespace, "pod": meta.pod, "pod_uid": meta.pod_uid,
                  "container": meta.container, "container_id": meta.container_id,
                  "source_id": source_id, "source_path": path, "resource": resource}
        self.source = orjson.dumps({k: v for k, v in source.items() if v is not None})
        self._native = _Native(proc, fmt, resource)
        if meta.problem:
            errors[DOCKER_CONFIG_ERROR] += 1  # shipped all the same, without what the config would have said
        self.fmt = fmt
        self._errors = errors
        self._redactions = redactions

    def commit_floor(self) -> int | None:
        """Lowest offset a read may resume from: the start of a record being assembled, or of one
        already out whose pieces lie on both sides of it."""
        return self._native.commit_floor()

    def build(self, chunk: Chunk) -> tuple[Records, int]:
        """(records, lines) from a chunk of complete lines. Safe in a worker thread: its counts wait for count()."""
        data, ends, lines = self._native.build(chunk.data, chunk.start, chunk.cut, time.time_ns(), time.monotonic())
        return self._records(data, ends), lines

    def expired(self) -> Records:
        """Multi-line events with no new line for the flush timeout."""
        records = self._records(*self._native.expired(time.monotonic()))
        self.count()
        return records

    def drain(self) -> Records:
        """The file is finished: records whose end never came, flagged partial."""
        records = self._records(*self._native.drain(time.monotonic()))
        self.count()
        return records

    def _records(self, data: bytes, ends: bytes) -> Records:
        return Records(data, memoryview(ends).cast("I"), self.source)

    def count(self) -> None:
        """Add the input problems and redactions seen since the last call to the agent's counters."""
        errors, redactions = self._native.take_counts()
        if errors:
            self._errors.update(dict(errors))
        if redactions:
            self._redactions.update(dict(redactions))
