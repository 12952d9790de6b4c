"""Progress of a long command (compact, retention, erase, verify, report, export).

A bar on stderr when stderr is a terminal — files done of total, bytes, rate
and ETA, as tqdm draws them — and nothing at all otherwise, so a script or a
pipe sees only the command's summary on stdout. The engines take a
``Progress`` and call it per file; ``QUIET`` is their default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

# done(nbytes): one more file finished, of ``nbytes`` bytes
Step = Callable[[int], None]


class Progress:
    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled

    @contextmanager
    def phase(self, what: str, files: int, nbytes: int = 0) -> Iterator[Step]:
        """A phase of ``files`` files (``nbytes`` bytes in all, 0 if unknown): call the step once per file."""
        if not self.enabled or files == 0:
            yield _nothing
            return
        from tqdm import tqdm  # only a terminal pays for the import
        by_bytes = nbytes > 0
        # a terminal that reports no width (a fresh pseudo-terminal, a serial console) would get an empty bar
        sized = _width(self.stream) > 0
        bar = tqdm(total=nbytes if by_bytes else files, desc=what, unit="B" if by_bytes else " files",
                   unit_scale=by_bytes, unit_divisor=1024, file=self.stream, dynamic_ncols=sized,
                   ncols=None if sized else 100, nrows=None if sized else 24, leave=True, mininterval=0.2)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += 1
            if by_bytes:
                bar.set_postfix_str(f"{done}/{files} files", refresh=False)
                bar.update(n)
            else:
                bar.update(1)

        try:
            yield step
        finally:
            bar.close()


def _nothing(_: int) -> None:
    pass


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


QUIET = Progress(enabled=False)
