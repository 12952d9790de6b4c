"""shipper.slots on its own: the descriptor budget, what a closed file remembers, and who waits first."""

from __future__ import annotations

import errno
import os
import resource
from collections import Counter
from pathlib import Path

from shipper.slots import HEADROOM, Closed, Slots, budget


def test_the_budget_keeps_headroom_for_the_rest_of_the_process() -> None:
    assert budget(0, 1024) == 1024 - HEADROOM
    assert budget(100, 1024) == 100
    assert budget(5000, 1024) == 1024 - HEADROOM, "configured above the process limit: the limit wins"
    assert budget(0, 40) == 30, "a small limit keeps a quarter of itself"
    assert budget(0, 1) == 1
    assert budget(7, resource.RLIM_INFINITY) == 7 and budget(0, resource.RLIM_INFINITY) == 1 << 20


def test_a_closed_file_is_told_apart_by_identity_size_and_time(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        closed = Closed.of(fd, 8, 1024, "sid")
        assert closed is not None and closed.source_id == "sid"
        assert closed.same_file(os.stat(path)) and not closed.changed(os.stat(path))
        with path.open("ab") as f:
            f.write(b"thr")            # a line without its newline yet: may wait past the position
        assert Closed.of(fd, 8, 1024, "sid") is not None
        assert closed.changed(os.stat(path))
        with path.open("ab") as f:
            f.write(b"ee\n")           # a complete line since the last read: read it first
        assert Closed.of(fd, 8, 1024, "sid") is None
        assert Closed.of(fd, 8, 2, "sid") is None, "more than a line's worth unread"
    finally:
        os.close(fd)
    os.rename(path, tmp_path / "b.log")
    path.write_bytes(b"one\ntwo\n")
    assert not closed.same_file(os.stat(path))


def test_waiting_paths_go_first_in_the_order_they_began_waiting() -> None:
    errors: Counter[str] = Counter()
    slots = Slots(2, errors)
    assert slots.free(0) == 2 and slots.free(5) == 0
    slots.wait("/b", 1.0, (1, 2))
    slots.wait("/a", 2.0, (1, 3))
    slots.wait("/b", 3.0, (1, 2))   # already waiting: still since 1.0, counted once
    assert errors["open_files_limit"] == 2 and slots.waiting["/b"][0] == 1.0
    wanted = [("/c", (1, 4)), ("/a", (1, 3)), ("/b", (1, 2))]
    assert [p for p, _ in slots.order(wanted)] == ["/b", "/a", "/c"]
    slots.served("/b")
    slots.served("/nowhere")
    assert list(slots.waiting) == ["/a"]


def test_running_out_of_descriptors_lowers_the_limit_to_what_is_held() -> None:
    slots = Slots(100, Counter())
    slots.exhausted(7, OSError(errno.EMFILE, "Too many open files"))
    assert slots.limit == 7
    slots.exhausted(20, OSError(errno.EMFILE, "Too many open files"))
    assert slots.limit == 7, "never raised by an exhaustion"
    slots.exhausted(0, OSError(errno.ENFILE, "Too many open files in system"))
    assert slots.limit == 1
