"""The embedded spool's on-disk layout, as both ends must see it (see runtime.transport)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from schemas.wire import HEADER_SIZE, MAX_BODY_BYTES

SEGMENT_SUFFIX = ".batch"


_SEGMENT = re.compile(r"^(\d{20})\.batch$")


# zstd's worst case is the input plus 1/256 of it and a few bytes; 1/128 and 64 KiB leave room.
MAX_SEGMENT_BYTES = HEADER_SIZE + 0xFFFF + MAX_BODY_BYTES + MAX_BODY_BYTES // 128 + (1 << 16)


def segment_name(seq: int) -> str:
    return f"{seq:020d}{SEGMENT_SUFFIX}"


def list_segments(node_dir: Path) -> list[tuple[int, Path]]:
    """Complete segments of one node, oldest first (temporary files are skipped)."""
    try:
        names = os.listdir(node_dir)
    except FileNotFoundError:
        return []
    out = [(int(m.group(1)), node_dir / n) for n in names if (m := _SEGMENT.match(n))]
    out.sort()
    return out
