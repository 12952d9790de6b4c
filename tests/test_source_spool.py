"""aggregator.source.spool.SpoolSource on a real spool directory: segments read in order per node with
their sequence numbers as offsets, committed ones removed but the newest kept, entries that are not a
batch (a link, a FIFO, a directory, an oversized file) moved aside and handed over as Unreadable, gaps
and numbers that went back, and names that are not segments left alone. The segments' bytes are opaque
here (decoding is aggregator.consume's); each holds a recognisable payload."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from aggregator.quarantine import Unreadable
from aggregator.source.base import Message
from aggregator.source.spool import NOT_A_FILE, TOO_LARGE, SpoolSource
from runtime.errors import ConfigError
from runtime.transport import SpoolSettings
from schemas.spool import segment_name


def segment(spool: Path, node: str, seq: int, data: bytes | None = None) -> Path:
    d = spool / node
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    p = d / segment_name(seq)
    p.write_bytes(f"{node}:{seq}".encode() if data is None else data)
    return p


def source(spool: Path, positions: dict[str, int] | None = None, **kw) -> SpoolSource:
    spool.mkdir(mode=0o700, exist_ok=True)
    s = SpoolSource(SpoolSettings(dir=spool), **kw)
    asyncio.run(s.start(lambda: dict(positions or {})))
    return s


def poll(s: SpoolSource) -> list[Message]:
    return asyncio.run(s.poll(0))


def commit(s: SpoolSource, node: str, next_offset: int) -> None:
    asyncio.run(s.commit(node, next_offset))


def offsets(messages: list[Message]) -> list[tuple[str, int]]:
    return [(m.partition, m.offset) for m in messages]


def names(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def test_segments_are_read_in_order_per_node_with_seq_as_offset(tmp_path):
    spool = tmp_path / "spool"
    for seq in (2, 0, 1):
        segment(spool, "node-b", seq)
    for seq in (10, 3):
        segment(spool, "node-a", seq)
    s = source(spool)
    got = poll(s)
    assert offsets(got) == [("node-a", 3), ("node-a", 10), ("node-b", 0), ("node-b", 1), ("node-b", 2)]
    assert [m.value for m in got] == [b"node-a:3", b"node-a:10", b"node-b:0", b"node-b:1", b"node-b:2"]
    assert not any(isinstance(m.value, Unreadable) for m in got)
    assert not s.caught_up()
    assert poll(s) == [] and s.caught_up()   # nothing is read twice
    segment(spool, "node-a", 11)
    assert offsets(poll(s)) == [("node-a", 11)]


def test_commit_removes_consumed_segments_but_keeps_the_newest(tmp_path):
    spool = tmp_path / "spool"
    for seq in range(4):
        segment(spool, "n", seq)
    s = source(spool)
    poll(s)
    assert s.lag() == {"n": 4}
    commit(s, "n", 2)
    assert names(spool / "n") == [segment_name(2), segment_name(3)] and s.lag() == {"n": 2}
    commit(s, "n", 4)
    assert names(spool / "n") == [segment_name(3)] and s.lag() == {"n": 0}
    # the kept segment is not taken for one that came back, now or after a restart from the catalog
    assert poll(s) == [] and s.rewinds["n"] == 0
    again = source(spool, {"n": 4})
    assert poll(again) == [] and again.rewinds["n"] == 0
    segment(spool, "n", 4)
    assert offsets(poll(again)) == [("n", 4)]


def test_a_restart_resumes_from_the_catalogs_positions(tmp_path):
    spool = tmp_path / "spool"
    for seq in (5, 6, 7):
        segment(spool, "a", seq)
    segment(spool, "b", 0)
    s = source(spool, {"a": 6, "b": 1})
    # 5 is below the position but is the consumed segment kept in place: not read again
    assert offsets(poll(s)) == [("a", 6), ("a", 7)]
    assert dict(s.rewinds) == {} and s.lag() == {"a": 2, "b": 0}


def test_gaps_in_the_numbers_are_read_through(tmp_path):
    spool = tmp_path / "spool"
    for seq in (0, 1, 1_700_000_000_000_000, 1_700_000_000_000_007):   # a shipper that restarted at a time
        segment(spool, "n", seq)
    s = source(spool)
    assert [m.offset for m in poll(s)] == [0, 1, 1_700_000_000_000_000, 1_700_000_000_000_007]
    assert s.lag() == {"n": 4}   # segments are counted, not subtracted


def test_a_segment_that_came_back_below_the_position_rewinds_and_is_read_again(tmp_path, caplog):
    spool = tmp_path / "spool"
    for seq in (8, 9):
        segment(spool, "n", seq)
    s = source(spool, {"n": 8})
    assert offsets(poll(s)) == [("n", 8), ("n", 9)]
    commit(s, "n", 10)
    assert names(spool / "n") == [segment_name(9)]
    segment(spool, "n", 3, b"restored from a backup")   # the shipper's numbers went back
    got = poll(s)
    # read from the lowest one that came back, the kept one too: the lake drops what it has by record id
    assert offsets(got) == [("n", 3), ("n", 9)] and got[0].value == b"restored from a backup"
    assert s.rewinds["n"] == 1
    assert any("spool sequence went back" in r.getMessage() for r in caplog.records)
    assert poll(s) == [] and s.rewinds["n"] == 1   # once


def test_a_symlink_at_a_segment_name_is_unreadable_and_moved_aside(tmp_path):
    spool = tmp_path / "spool"
    victim = tmp_path / "victim.key"
    victim.write_bytes(b"secret key material\n")
    segment(spool, "n", 0)
    link = spool / "n" / segment_name(1)
    link.symlink_to(victim)
    segment(spool, "n", 2)
    s = source(spool)
    got = poll(s)
    assert offsets(got) == [("n", 0), ("n", 1), ("n", 2)]
    bad = got[1].value
    assert isinstance(bad, Unreadable) and bad == b"" and bad.reason == NOT_A_FILE
    aside = spool / "n" / f".{segment_name(1)}.{NOT_A_FILE}"
    assert bad.note == (f"spool segment {link} is a symbolic link to {str(victim)!r}, not a regular file, so it is "
                        f"not a batch; moved to {aside}")
    assert aside.is_symlink() and not os.path.lexists(link)     # the link itself moved, never its target
    assert victim.read_bytes() == b"secret key material\n"
    assert got[2].value == b"n:2"
    commit(s, "n", 3)
    assert poll(s) == []                                         # the moved entry is never read again


def test_a_fifo_or_directory_at_a_segment_name_is_unreadable_without_hanging(tmp_path):
    spool = tmp_path / "spool"
    segment(spool, "n", 0)
    fifo = spool / "n" / segment_name(1)
    os.mkfifo(fifo)
    directory = spool / "n" / segment_name(2)
    directory.mkdir()
    segment(spool, "n", 3)
    s = source(spool)
    got = asyncio.run(asyncio.wait_for(s.poll(0), timeout=10))
    assert offsets(got) == [("n", 0), ("n", 1), ("n", 2), ("n", 3)]
    assert [getattr(m.value, "reason", None) for m in got] == [None, NOT_A_FILE, NOT_A_FILE, None]
    assert got[1].value.note == (f"spool segment {fifo} is a FIFO, not a regular file, so it is not a batch; "
                                 f"moved to {spool / 'n' / ('.' + segment_name(1) + '.not_a_file')}")
    assert "is a directory, not a regular file" in got[2].value.note
    assert names(spool / "n") == [f".{segment_name(1)}.not_a_file", f".{segment_name(2)}.not_a_file",
                                  segment_name(0), segment_name(3)]


def test_an_oversized_segment_is_unreadable_and_its_bytes_are_not_read(tmp_path):
    spool = tmp_path / "spool"
    segment(spool, "n", 0, b"x" * 100)
    big = segment(spool, "n", 1, b"y" * 101)
    s = source(spool, max_segment_bytes=100)
    got = poll(s)
    assert got[0].value == b"x" * 100                     # at the limit: a batch
    bad = got[1].value
    assert isinstance(bad, Unreadable) and bad.reason == TOO_LARGE and bad == b""
    aside = big.with_name(f".{big.name}.{TOO_LARGE}")
    assert bad.note == (f"spool segment {big} holds 101 bytes, more than the 100 a batch can take, so it is not a "
                        f"batch; moved to {aside}")
    assert aside.read_bytes() == b"y" * 101               # kept for a person, never read as a batch


def test_a_poll_reads_at_most_its_byte_budget_but_always_one_segment(tmp_path):
    spool = tmp_path / "spool"
    segment(spool, "a", 0, b"A" * 40)                     # alone larger than the budget: read all the same
    for seq in (1, 2, 3):
        segment(spool, "a", seq, b"a" * 10)
    s = source(spool, max_poll_bytes=25)
    assert offsets(poll(s)) == [("a", 0)]
    assert offsets(poll(s)) == [("a", 1), ("a", 2)]
    assert offsets(poll(s)) == [("a", 3)]
    assert [m.offset for m in poll(source(tmp_path / "spool", max_segments=2))] == [0, 1]


def test_names_that_are_not_segments_are_ignored(tmp_path, caplog):
    spool = tmp_path / "spool"
    segment(spool, "n", 1)
    d = spool / "n"
    for name in ("notes.txt", "1.batch", f"{'1' * 21}.batch", f".{segment_name(2)}.tmp", f"{segment_name(3)}.tmp",
                 f"{'0' * 19}4.batchx"):
        (d / name).write_bytes(b"planted")
    (spool / "stray-file").write_bytes(b"planted at the spool root")
    outside = tmp_path / "elsewhere"
    segment(outside, "x", 0, b"not ours")
    (spool / "linked-node").symlink_to(outside / "x")      # a node directory that is a link: never followed
    s = source(spool)
    assert offsets(poll(s)) == [("n", 1)]
    warned = sorted(r.path for r in caplog.records if r.getMessage() == "not a node directory; left alone")
    assert warned == [str(spool / "linked-node"), str(spool / "stray-file")]
    commit(s, "n", 2)
    assert (d / "notes.txt").read_bytes() == b"planted" and (outside / "x" / segment_name(0)).exists()
    assert s.lag() == {"n": 0}


def test_availability_and_a_spool_directory_others_can_write(tmp_path):
    spool = tmp_path / "spool"
    s = SpoolSource(SpoolSettings(dir=spool))
    assert s.unavailable() == f"spool directory {spool} is missing"
    spool.mkdir(mode=0o777)
    spool.chmod(0o777)
    with pytest.raises(ConfigError) as e:
        asyncio.run(s.start(dict))
    assert str(e.value) == (f"the spool directory {spool} is writable by other users (mode 0777), who could plant "
                            f"files in it; run 'chmod go-w {spool}'")
    spool.chmod(0o700)
    asyncio.run(s.start(dict))
    assert s.unavailable() is None and poll(s) == []
