"""Structure from a container line's text: JSON objects, logfmt and plain text.

Pure functions, no I/O. JSON objects and logfmt lines give time, level,
message, trace and span ids under their common names; every other field is
kept as an attribute. Plain text is scanned for a level word and
``trace_id=``-style tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from schemas.record import FLAG_NON_OBJECT_JSON, SEVERITY_NUMBERS
from shipper.cri import parse_rfc3339_ns

MESSAGE_KEYS = ("message", "msg", "log", "@message", "text")
LEVEL_KEYS = ("level", "lvl", "severity", "log.level", "levelname", "loglevel", "severity_text")
TIME_KEYS = ("time", "ts", "timestamp", "@timestamp", "datetime", "t")
TRACE_KEYS = ("trace_id", "traceId", "trace.id", "traceID", "otelTraceID", "dd.trace_id")
SPAN_KEYS = ("span_id", "spanId", "span.id", "spanID", "otelSpanID", "dd.span_id")

_LEVEL_ALIASES = {
    "trace": "TRACE", "finest": "TRACE", "debug": "DEBUG", "fine": "DEBUG", "dbug": "DEBUG",
    "info": "INFO", "information": "INFO", "informational": "INFO", "notice": "INFO",
    "warn": "WARN", "warning": "WARN", "wrn": "WARN",
    "error": "ERROR", "err": "ERROR", "eror": "ERROR",
    "critical": "FATAL", "crit": "FATAL", "fatal": "FATAL", "panic": "FATAL",
    "alert": "FATAL", "emerg": "FATAL", "emergency": "FATAL",
}
# pino / bunyan numeric levels
_NUMERIC_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}

_PLAIN_LEVEL = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|FATAL|PANIC)\b|\blevel=\"?(\w+)", re.ASCII)
_HEX_ID = re.compile(r"^[0-9a-fA-F]+$")
_PLAIN_TRACE = re.compile(
    r"(?:trace_?id|traceId|trace\.id|traceID|otelTraceID|dd\.trace_id)[=:]\s*\"?([0-9a-fA-F]{32}|\d{1,20})\b")
_PLAIN_SPAN = re.compile(r"(?:span_?id|spanId|span\.id|spanID|otelSpanID)[=:]\s*\"?([0-9a-fA-F]{16}|\d{1,20})\b")
_LOGFMT_START = re.compile(r"^[A-Za-z_][\w.\-/]*=")
_LOGFMT_PAIR = re.compile(r'([A-Za-z_][\w.\-/]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_PLAIN_TRACEPARENT = re.compile(r"\b00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}\b")


@dataclass(slots=True)
class Parsed:
    body: str
    severity_text: str | None = None
    severity_number: int = 0
    time_ns: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    attributes: bytes | None = None  # JSON object
    flags: int = 0


def severity(level: object) -> tuple[str | None, int]:
    """(severity text as written, OpenTelemetry severity number)."""
    if isinstance(level, bool) or level is None:
        return None, 0
    if isinstance(level, int):
        name = _NUMERIC_LEVELS.get(level)
        return str(level), SEVERITY_NUMBERS[name] if name else 0
    text = str(level)
    name = _LEVEL_ALIASES.get(text.lower())
    return text, SEVERITY_NUMBERS[name] if name else 0


def normalize_trace_id(value: object, width: int = 32) -> str | None:
    """Hex ids are lower-cased; Datadog's decimal 64-bit ids become hex, left-padded."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return format(value, f"0{width}x")[-width:]
    if not isinstance(value, str) or not value:
        return None
    if value.isdigit() and len(value) <= 20:
        return format(int(value), f"0{width}x")[-width:]
    if len(value) == width and _HEX_ID.match(value):
        return value.lower()
    return None


def _time_ns(value: object) -> int | None:
    """Epoch seconds/ms/us/ns by magnitude, or an RFC 3339 string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        for limit, scale in ((1e11, 1e9), (1e14, 1e6), (1e17, 1e3)):
            if abs(v) < limit:
                return int(v * scale)
        return int(v)
    if isinstance(value, str):
        try:
            return parse_rfc3339_ns(value.encode())
        except (ValueError, IndexError):
            return None
    return None


def _pop_first(obj: dict, keys: tuple[str, ...]) -> object:
    for k in keys:
        if k in obj:
            return obj.pop(k)
    return None


def _traceparent(obj: dict) -> tuple[str | None, str | None]:
    tp = obj.get("traceparent")
    if isinstance(tp, str):
        m = _PLAIN_TRACEPARENT.search(tp)
        if m:
            del obj["traceparent"]
            return m.group(1), m.group(2)
    return None, None


def parse_fields(text: str, obj: dict) -> Parsed:
    """A JSON object or a logfmt line's fields → Parsed (consumes ``obj``)."""
    message = _pop_first(obj, MESSAGE_KEYS)
    sev_text, sev_num = severity(_pop_first(obj, LEVEL_KEYS))
    time_ns = _time_ns(_pop_first(obj, TIME_KEYS))
    trace_id = normalize_trace_id(_pop_first(obj, TRACE_KEYS))
    span_id = normalize_trace_id(_pop_first(obj, SPAN_KEYS), 16)
    if trace_id is None:
        trace_id, tp_span = _traceparent(obj)
        span_id = span_id or tp_span
    body = message if isinstance(message, str) else (text if message is None else orjson.dumps(message).decode())
    return Parsed(body=body, severity_text=sev_text, severity_number=sev_num, time_ns=time_ns,
                  trace_id=trace_id, span_id=span_id, attributes=orjson.dumps(obj) if obj else None)


def parse_logfmt(text: str) -> dict | None:
    """``key=value key2="quoted value"`` → dict, or None if the line is not logfmt."""
    if not _LOGFMT_START.match(text):
        return None
    fields = {}
    for key, value in _LOGFMT_PAIR.findall(text):
        if value.startswith('"'):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                value = value[1:-1]
        fields[key] = value
    return fields if len(fields) >= 2 else None


def parse_plain(text: str) -> Parsed:
    p = Parsed(body=text)
    m = _PLAIN_LEVEL.search(text, 0, 200)
    if m:
        p.severity_text, p.severity_number = severity(m.group(1) or m.group(2))
    if "race" in text or "00-" in text:
        t = _PLAIN_TRACE.search(text)
        if t:
            p.trace_id = normalize_trace_id(t.group(1))
            s = _PLAIN_SPAN.search(text)
            p.span_id = normalize_trace_id(s.group(1), 16) if s else None
        else:
            tp = _PLAIN_TRACEPARENT.search(text)
            if tp:
                p.trace_id, p.span_id = tp.group(1), tp.group(2)
    return p


def parse_text(text: str) -> Parsed:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            value = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return parse_plain(text)
        if isinstance(value, dict):
            return parse_fields(text, value)
        p = parse_plain(text)
        p.flags |= FLAG_NON_OBJECT_JSON
        return p
    fields = parse_logfmt(text) if "=" in text else None
    return parse_fields(text, fields) if fields else parse_plain(text)
