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

_ROLES: dict[str, tuple[str, int]] = {
    key: (role, rank)
    for role, keys in (("message", MESSAGE_KEYS), ("level", LEVEL_KEYS), ("time", TIME_KEYS),
                       ("trace", TRACE_KEYS), ("span", SPAN_KEYS))
    for rank, key in enumerate(keys)}

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

_PLAIN_LEVELS = frozenset({"TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "WARNING", "ERROR", "ERR", "CRITICAL",
                           "FATAL", "PANIC"})
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
    if value is None:
        return None
    if type(value) is str and len(value) == width and value.isalnum():
        try:
            int(value, 16)
        except ValueError:
            return None
        return value.lower()
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


def _traceparent(obj: dict) -> tuple[str | None, str | None]:
    tp = obj.get("traceparent")
    if isinstance(tp, str):
        m = _PLAIN_TRACEPARENT.search(tp)
        if m:
            del obj["traceparent"]
            return m.group(1), m.group(2)
    return None, None


def _take_roles(obj: dict) -> dict[str, object]:
    """Pop the fields that have a role; where aliases compete, the earliest name in its list wins."""
    found: dict[str, tuple[int, str]] = {}
    for key in obj:
        hit = _ROLES.get(key)
        if hit is not None:
            role, rank = hit
            if role not in found or rank < found[role][0]:
                found[role] = (rank, key)
    return {role: obj.pop(key) for role, (_, key) in found.items()}


def parse_fields(text: str, obj: dict) -> Parsed:
    """A JSON object or a logfmt line's fields → Parsed (consumes ``obj``)."""
    roles = _take_roles(obj)
    message = roles.get("message")
    sev_text, sev_num = severity(roles.get("level"))
    time_ns = _time_ns(roles.get("time"))
    trace_id = normalize_trace_id(roles.get("trace"))
    span_id = normalize_trace_id(roles.get("span"), 16)
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


def _plain_level(text: str) -> str | None:
    """An upper-case level word among the first tokens ("2026-11-24 10:00:00 [ERROR] …"), or level=…"""
    for token in text[:120].split(None, 5)[:5]:
        word = token.strip("[]():|<>")
        if word in _PLAIN_LEVELS:
            return word
    i = text.find("level=")
    if i >= 0:
        m = _LOGFMT_PAIR.match(text, i)
        if m:
            return m.group(2).strip('"')
    return None


def parse_plain(text: str) -> Parsed:
    p = Parsed(body=text)
    level = _plain_level(text)
    if level:
        p.severity_text, p.severity_number = severity(level)
    i = text.find("race")
    if i >= 0 or "00-" in text:
        t = _PLAIN_TRACE.search(text, max(0, i - 10)) if i >= 0 else None
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
