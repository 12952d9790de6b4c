"""shipper.files.identify: which content a file holds and where reading it goes on, on real files."""

from __future__ import annotations

import os
import time

import pytest

from shipper import identity
from shipper.files import Identified, TailedFile, TakeOver, Verdict, identify
from shipper.identity import Position
from shipper.positions import Positions
from shipper.tail import FileTail

NODE = "node-1"
FIRST = b'{"msg": "first line of the application", "n": 0}\n'


@pytest.fixture
def positions(tmp_path):
    return Positions(tmp_path / "state" / "cp.json")


def tailed(path, *, adopt_after: float | None = None, offset: int = 0) -> TailedFile:
    tail = FileTail.open(str(path))
    tail.offset = offset
    st = os.fstat(tail.fd)
    src = TailedFile(str(path), tail, st.st_dev, st.st_ino, str(path.parent), time.monotonic())
    src.adopt_after = adopt_after
    return src


def no_owner(_sid: str) -> TailedFile | None:
    return None


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_file_whose_first_line_is_incomplete_is_not_identified_yet(tmp_path, positions):
    write(tmp_path / "logs" / "a.log", b'{"msg": "no newline yet')
    assert identify(tailed(tmp_path / "logs" / "a.log"), NODE, no_owner, positions,
                    rotated=False, owed=False) is Verdict.NOT_YET


def test_a_new_file_is_read_from_its_start(tmp_path, positions):
    write(tmp_path / "logs" / "a.log", FIRST + b"second\n")
    src = tailed(tmp_path / "logs" / "a.log")
    found = identify(src, NODE, no_owner, positions, rotated=False, owed=False)
    fp = identity.fingerprint(src.tail.fd, src.directory)
    assert found == Identified(identity.source_id(NODE, fp), fp, Position(0, 0))


def test_a_known_position_is_resumed_only_where_the_file_holds_the_bytes_before_it(tmp_path, positions):
    log = tmp_path / "logs" / "a.log"
    write(log, FIRST + b"second\n" + b"third\n")
    src = tailed(log)
    fp = identity.fingerprint(src.tail.fd, src.directory)
    sid = identity.source_id(NODE, fp)
    at = len(FIRST) + len(b"second\n")
    positions.delivered({sid: (str(log), Position(at, identity.window(src.tail.fd, at)))})
    assert identify(src, NODE, no_owner, positions, rotated=False, owed=False) == \
        Identified(sid, fp, Position(at, identity.window(src.tail.fd, at)))
    # The same first line, other bytes before the position: another content, read from 0 under its own id.
    other = tmp_path / "logs" / "b.log"
    write(other, FIRST + b"SECOND\n" + b"third\n")
    found = identify(tailed(other), NODE, no_owner, positions, rotated=False, owed=False)
    assert isinstance(found, Identified)
    assert found.source_id != sid and found.position == Position(0, 0)


def test_a_copy_of_what_another_file_is_reading_holds_nothing_to_read(tmp_path, positions):
    original = tmp_path / "logs" / "a.log"
    write(original, FIRST + b"second\n")
    owner = tailed(original, offset=len(FIRST) + 7)
    copy = tmp_path / "logs" / "a.log.1"
    write(copy, FIRST + b"second\n")
    assert identify(tailed(copy), NODE, lambda sid: owner, positions, rotated=True, owed=False) is Verdict.NOTHING
    # A file that begins alike but differs within what the owner has read is its own content.
    diverged = tmp_path / "logs" / "c.log"
    write(diverged, FIRST + b"SECOND\n")
    found = identify(tailed(diverged), NODE, lambda sid: owner, positions, rotated=False, owed=False)
    assert isinstance(found, Identified) and found.position == Position(0, 0)


def test_the_copy_of_a_truncated_file_takes_over_its_reading(tmp_path, positions):
    original = tmp_path / "logs" / "a.log"
    write(original, FIRST + b"second\n")
    owner = tailed(original, offset=len(FIRST))
    owner.window = identity.window(owner.tail.fd, len(FIRST))
    owner.detached = True
    copy = tmp_path / "logs" / "a.log.1"
    write(copy, FIRST + b"second\n")
    assert identify(tailed(copy), NODE, lambda sid: owner, positions, rotated=True, owed=False) == TakeOver(owner)
    # Not a rotated file (the file now at the path): it is new content beside the detached owner.
    found = identify(tailed(copy), NODE, lambda sid: owner, positions, rotated=False, owed=False)
    assert isinstance(found, Identified) and found.position == Position(0, 0)


def test_a_rotated_file_older_than_the_history_is_left_alone_unless_owed(tmp_path, positions):
    old = tmp_path / "logs" / "a.log.1"
    write(old, FIRST)
    os.utime(old, (1_000_000, 1_000_000))
    assert identify(tailed(old, adopt_after=time.time() - 60), NODE, no_owner, positions,
                    rotated=True, owed=False) is Verdict.NOTHING
    found = identify(tailed(old, adopt_after=0.0), NODE, no_owner, positions, rotated=True, owed=True)
    assert isinstance(found, Identified) and found.position == Position(0, 0)


def test_a_rotated_file_read_to_its_end_holds_nothing_new_unless_owed(tmp_path, positions):
    log = tmp_path / "logs" / "a.log.1"
    write(log, FIRST + b"last\n")
    src = tailed(log, adopt_after=0.0)
    fp = identity.fingerprint(src.tail.fd, src.directory)
    end = len(FIRST) + 5
    positions.delivered({identity.source_id(NODE, fp): (str(log), Position(end, identity.window(src.tail.fd, end)))})
    assert identify(src, NODE, no_owner, positions, rotated=True, owed=False) is Verdict.NOTHING
    found = identify(src, NODE, no_owner, positions, rotated=True, owed=True)
    assert isinstance(found, Identified) and found.position.offset == end
