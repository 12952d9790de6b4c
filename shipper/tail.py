"""Reading one file: complete lines from a byte offset, nothing more.

A line without its newline yet is left unread (its bytes are read again on the
next turn), so an offset always sits on a line boundary. A line longer than
the maximum record size is cut: its first ``max_line`` bytes come out as a line
marked ``cut`` and the rest, up to its newline, is skipped. Memory stays
bounded whatever the file holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(slots=True)
class Chunk:
    data: bytes            # complete lines, each with its newline (none after the head of a cut line)
    start: int             # offset of data's first byte
    end: int               # offset just past the last byte consumed
    at_eof: bool           # nothing more to read right now
    cut: bool = False      # data is the head of an overlong line


class FileTail:
    """An open file read forward from ``offset``. Holding the descriptor keeps
    a renamed or deleted file readable to its end."""

    def __init__(self, path: str, fd: int, offset: int) -> None:
        self.path = path
        self.fd = fd
        self.offset = offset
        # Start of an overlong line whose rest is being skipped: a checkpoint must not
        # pass it, or a restart would resume mid-line and read the rest as a new line.
        self.cut_from: int | None = None

    @classmethod
    def open(cls, path: str, offset: int = 0, follow: bool = True) -> "FileTail":
        """O_NONBLOCK: a FIFO planted where a log was expected must not hang the agent (the caller
        checks it is a regular file); ``follow=False`` refuses a symlink."""
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        return cls(path, os.open(path, flags), offset)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def unread(self) -> int:
        """Bytes written and not read yet; 0 once closed. A file closed while idle (shipper.slots)
        leaves the agent's sources with its descriptor and is unchanged since, so it has none."""
        return max(0, self.size() - self.offset) if self.fd >= 0 else 0

    def read(self, max_bytes: int, max_line: int) -> Chunk:
        """Up to about ``max_bytes`` of complete lines."""
        want = max(max_bytes, max_line + 1)
        data = os.pread(self.fd, want, self.offset)
        at_eof = len(data) < want
        if self.cut_from is not None:
            nl = data.find(b"\n")
            if nl < 0:
                self.offset += len(data)
                return Chunk(b"", self.offset, self.offset, at_eof)
            self.offset += nl + 1
            data = data[nl + 1:]
            self.cut_from = None
        start = self.offset
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            if len(data) <= max_line:
                # an incomplete line: wait for its end; after a skip that ended in this window, ``data``
                # is only the window's tail, so complete lines may still follow it
                return Chunk(b"", start, start, at_eof)
            self.offset = start + max_line
            self.cut_from = start
            return Chunk(data[:max_line], start, self.offset, False, cut=True)
        self.offset = start + last_nl + 1
        return Chunk(data[:last_nl + 1], start, self.offset, at_eof and last_nl == len(data) - 1)

    def read_rest(self, max_line: int) -> Chunk:
        """The file is finished: its last line, which will never get its newline, as it is
        (``at_eof`` False: more lines came since the last read, read them first)."""
        start = self.offset
        if self.cut_from is not None:
            # Whatever came while the rest of a cut line is skipped (its newline, complete lines, or more of
            # it) goes to a normal read, which ends the skip and accounts for the skipped bytes.
            return Chunk(b"", start, start, self.size() <= start)
        data = os.pread(self.fd, max_line + 1, start)
        if data.find(b"\n") >= 0:  # more lines came since the last read: leave them to a normal read
            return Chunk(b"", start, start, False)
        self.offset += len(data)
        return Chunk(data, start, self.offset, True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
