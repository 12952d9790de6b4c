"""How loglake makes a file durable; both the spool contract and every
position loglake saves depend on it: write to a temporary name in the same
directory, fsync, rename over the final name, fsync the directory. After a
crash either the old or the new content is there, never a mix."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        # a full disk must not keep a half-written temporary file taking the room that is left
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
