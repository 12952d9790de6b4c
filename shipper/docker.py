"""Docker json-file lines: ``{"log":"text\\n","stream":"stdout","time":"<RFC3339Nano>"}``.

Pure, no I/O. Docker splits lines longer than 16 KiB into records whose
``log`` does not end in a newline; the last piece does. shipper.partial joins them.
"""

from __future__ import annotations

import orjson

from shipper.cri import parse_rfc3339_ns
from shipper.partial import RuntimeLine


def parse_line(line: bytes) -> RuntimeLine | None:
    """Parse one json-file record; None if it is not one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    log, stream, ts = obj.get("log"), obj.get("stream"), obj.get("time")
    if not isinstance(log, str) or stream not in ("stdout", "stderr") or not isinstance(ts, str):
        return None
    try:
        time_ns = parse_rfc3339_ns(ts.encode())
    except (ValueError, IndexError):
        return None
    partial = not log.endswith("\n")
    return RuntimeLine(time_ns, stream, partial, (log if partial else log[:-1]).encode())
