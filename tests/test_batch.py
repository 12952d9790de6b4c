"""shipper.batch.Batcher: records cut into batches per key by size and age, the marks (positions a
checkpoint may move to) each batch carries, position-only batches, and the reports that tell the lake
where sources stand once a key is quiet, sealed or shut down. Times are given explicitly (``due(now)``)
relative to time.monotonic(), the clock the Batcher stamps batches with."""

from __future__ import annotations

import time
from array import array

import pytest

from shipper.batch import Batcher, Outgoing, Progress, Records
from shipper.identity import Position

SRC_A = b'{"source_id":"A","source_path":"/a.log"}'
SRC_B = b'{"source_id":"B","source_path":"/b.log"}'


def recs(*lines: bytes, source: bytes = SRC_A) -> Records:
    """Records as the native core hands them over: back to back, ``ends`` just past each newline."""
    data = b"".join(line + b"\n" for line in lines)
    ends, n = [], 0
    for line in lines:
        n += len(line) + 1
        ends.append(n)
    return Records(data, memoryview(array("I", ends).tobytes()).cast("I"), source)


def prog(offset: int, path: str = "/a.log", source: bytes = SRC_A, sealed: bool = False) -> Progress:
    return Progress(path, Position(offset, offset * 7), source, sealed)


def lines_of(batch: Outgoing) -> list[bytes]:
    return [line for run in batch.runs for line in run.records.splitlines()]


def later(s: float) -> float:
    """A time ``s`` seconds after every batch created so far."""
    return time.monotonic() + s


def test_records_of_one_key_stay_in_one_batch_until_full():
    b = Batcher(max_bytes=100, max_wait_s=1.0)
    assert b.add(b"k", recs(b"a" * 9, b"b" * 9), "A", prog(20)) == []   # 20 bytes
    assert b.add(b"k", recs(b"c" * 9), "A", prog(30)) == []
    assert len(b) == 1
    [batch] = b.drain()[:1]
    assert batch.key == b"k" and batch.count == 3 and batch.size == 30
    assert lines_of(batch) == [b"a" * 9, b"b" * 9, b"c" * 9]
    assert batch.marks == {"A": prog(30)}
    assert batch.sent and not batch.report


def test_size_limit_cuts_between_records_and_marks_stay_with_the_last_batch():
    b = Batcher(max_bytes=25, max_wait_s=60)
    lines = [bytes([0x61 + i]) * 9 for i in range(7)]  # 10 bytes each with the newline
    b.add(b"k", recs(lines[0]), "A", prog(10))
    full = b.add(b"k", recs(*lines[1:]), "A", prog(70))
    # 2 records (20 bytes) per batch: [a b] [c d] [e f] leave, g stays open
    assert [lines_of(x) for x in full] == [lines[0:2], lines[2:4], lines[4:6]]
    assert [x.size for x in full] == [20, 20, 20]
    # the first full batch carries the mark of the earlier add; the batches cut from the second add carry
    # none (their records end before 70: the checkpoint may not move there until the last one is acked)
    assert [x.marks for x in full] == [{"A": prog(10)}, {}, {}]
    [rest] = [x for x in b.drain() if x.count]
    assert lines_of(rest) == [lines[6]] and rest.marks == {"A": prog(70)}


def test_a_record_larger_than_a_batch_goes_alone():
    b = Batcher(max_bytes=10, max_wait_s=60)
    assert b.add(b"k", recs(b"s"), "A", prog(2)) == []
    full = b.add(b"k", recs(b"L" * 30, b"t"), "A", prog(35))
    assert [lines_of(x) for x in full] == [[b"s"], [b"L" * 30]]
    assert full[1].size == 31 and full[1].count == 1
    [rest] = [x for x in b.drain() if x.count]
    assert lines_of(rest) == [b"t"]


def test_keys_are_batched_apart_and_runs_keep_each_source():
    b = Batcher(max_bytes=1000, max_wait_s=60)
    b.add(b"web", recs(b"w1", b"w2"), "A", prog(6))
    b.add(b"api", recs(b"p1", source=SRC_B), "B", prog(3, "/b.log", SRC_B))
    b.add(b"web", recs(b"w3", source=SRC_B), "B", prog(3, "/b.log", SRC_B))
    assert len(b) == 2
    closed = {x.key: x for x in b.drain() if x.count}
    assert lines_of(closed[b"web"]) == [b"w1", b"w2", b"w3"] and lines_of(closed[b"api"]) == [b"p1"]
    assert [(r.source, r.count) for r in closed[b"web"].runs] == [(SRC_A, 2), (SRC_B, 1)]
    assert set(closed[b"web"].marks) == {"A", "B"} and set(closed[b"api"].marks) == {"B"}


def test_due_closes_batches_older_than_max_wait_only():
    b = Batcher(max_bytes=1000, max_wait_s=0.5, report_s=100)
    b.add(b"old", recs(b"x"), "A", prog(2))
    created = b._open[b"old"].created
    b.add(b"new", recs(b"y", source=SRC_B), "B", prog(2, "/b.log", SRC_B))
    b._open[b"new"].created = created + 0.4
    assert b.due(created + 0.49) == []
    out = b.due(created + 0.5)
    assert [x.key for x in out] == [b"old"]
    assert len(b) == 1
    assert [x.key for x in b.due(created + 0.9)] == [b"new"]
    assert len(b) == 0


def test_a_position_only_batch_is_not_sent_and_is_acknowledged_in_order():
    """Lines that only completed a skip: the checkpoint moves, with no records, behind earlier batches."""
    b = Batcher(max_bytes=20, max_wait_s=60, report_s=100)
    full = b.add(b"k", recs(b"a" * 9, b"b" * 9, b"c" * 9), "A", prog(30))
    assert [x.count for x in full] == [2]
    b.add(b"k", None, "A", prog(55))   # the mark moves past lines that gave no record
    out = b.drain()
    # the open batch still holds c, with the latest mark; a report follows
    assert [(x.count, x.sent, x.report) for x in out] == [(1, True, False), (0, True, True)]
    assert out[0].marks == {"A": prog(55)} and out[1].marks == {"A": prog(55)}

    b2 = Batcher(max_bytes=100, max_wait_s=60, report_s=100)
    b2.add(b"k", None, "A", prog(12))
    [only] = b2.drain()
    assert (only.count, only.runs, only.sent, only.marks) == (0, [], False, {"A": prog(12)})


def test_a_report_follows_a_key_quiet_for_report_s_with_the_latest_marks():
    b = Batcher(max_bytes=1000, max_wait_s=0.1, report_s=5)
    b.add(b"k", recs(b"x"), "A", prog(2))
    t = later(1)
    [first] = b.due(t)
    assert first.count == 1 and not first.report
    assert b.due(t + 4.9) == []
    # a position-only batch in between: not sent, and its mark joins the report
    b.add(b"k", None, "A", prog(9))
    b._open[b"k"].created = t
    [pos] = b.due(t + 4.95)
    assert not pos.sent and pos.marks == {"A": prog(9)}
    [report] = b.due(t + 5)
    assert report.report and report.sent and report.count == 0 and report.runs == []
    assert report.marks == {"A": prog(9)}
    # reported once only
    assert b.due(t + 100) == [] and b.drain() == []


def test_no_report_while_the_key_has_an_open_batch():
    b = Batcher(max_bytes=1000, max_wait_s=10, report_s=1)
    b.add(b"k", recs(b"x"), "A", prog(2))
    t = later(0)
    assert [x.count for x in b.due(t + 10)] == [1]    # the first batch leaves at t + 10
    b.add(b"k", recs(b"y"), "A", prog(4))             # records again before the key was quiet
    b._open[b"k"].created = t + 10.5
    assert b.due(t + 15) == []                        # quiet for 5 s, but a batch is open: no report
    assert [(x.count, x.report) for x in b.due(t + 20.5)] == [(1, False)]
    assert b.due(t + 21) == []
    [report] = b.due(t + 21.5)
    assert report.report and report.marks == {"A": prog(4)}


def test_report_later_sends_a_report_with_no_records():
    b = Batcher(max_bytes=1000, max_wait_s=1, report_s=3)
    b.report_later(b"k", "A", prog(40))
    b.report_later(b"k", "A", prog(99))      # the first position given wins (setdefault)
    assert b.due(later(0)) == []
    [r] = b.due(later(3.1))
    assert r.report and r.count == 0 and r.marks == {"A": prog(40)}
    b.report_later(b"k2", "B", prog(7, "/b.log", SRC_B))
    [r2] = b.drain()
    assert r2.key == b"k2" and r2.report and r2.marks == {"B": prog(7, "/b.log", SRC_B)}


def test_report_later_is_not_overridden_by_a_batch_of_the_same_source():
    b = Batcher(max_bytes=1000, max_wait_s=1, report_s=3)
    b.report_later(b"k", "A", prog(40))
    b.add(b"k", recs(b"x"), "A", prog(50))
    out = b.drain()
    assert [(x.count, x.report) for x in out] == [(1, False), (0, True)]
    assert out[1].marks == {"A": prog(50)}


def test_report_later_of_one_source_survives_a_batch_of_another_source_of_the_key():
    b = Batcher(max_bytes=1000, max_wait_s=1, report_s=3)
    b.report_later(b"k", "A", prog(40))                     # e.g. the rotated file after a restart
    b.add(b"k", recs(b"x", source=SRC_B), "B", prog(2, "/b.log", SRC_B))   # the live file of the same container
    out = b.drain()
    assert [(x.count, x.report) for x in out] == [(1, False), (0, True)]
    assert set(out[1].marks) == {"A", "B"}


def test_a_position_only_mark_of_one_source_survives_a_later_batch_of_another_source_of_the_key():
    b = Batcher(max_bytes=1000, max_wait_s=0, report_s=100)
    b.add(b"k", recs(b"x"), "A", prog(2))
    assert [x.count for x in b.due(later(0))] == [1]
    b.add(b"k", None, "B", prog(5, "/b.log", SRC_B))    # another file of the container: lines that gave no record
    [pos] = b.due(later(0))
    assert not pos.sent and pos.marks == {"B": prog(5, "/b.log", SRC_B)}
    b.add(b"k", recs(b"y"), "A", prog(4))
    assert [x.count for x in b.due(later(0))] == [1]
    [report] = b.drain()
    assert report.report and report.marks == {"A": prog(4), "B": prog(5, "/b.log", SRC_B)}


def test_seal_sends_the_batch_now_then_a_report():
    b = Batcher(max_bytes=1000, max_wait_s=60, report_s=60)
    b.add(b"k", recs(b"x", b"y"), "A", prog(4))
    b.add(b"other", recs(b"z", source=SRC_B), "B", prog(2, "/b.log", SRC_B))
    b.add(b"k", recs(b"last"), "A", prog(9, sealed=True))
    out = b.seal(b"k")
    assert [(x.key, x.count, x.report) for x in out] == [(b"k", 3, True), (b"k", 0, True)]
    assert out[0].marks["A"].sealed and out[1].marks == {"A": prog(9, sealed=True)}
    assert len(b) == 1                         # the other key is untouched
    assert b.seal(b"k") == []                  # nothing left for k


def test_sealing_with_no_new_records_merges_the_marks_into_one_report():
    b = Batcher(max_bytes=1000, max_wait_s=0, report_s=60)
    b.add(b"k", recs(b"x"), "A", prog(2))
    [sent] = b.due(later(0))
    b.add(b"k", None, "A", prog(2, sealed=True))   # the file closed: nothing more came
    out = b.seal(b"k")
    assert [(x.count, x.report, x.sent) for x in out] == [(0, True, True)]
    assert out[0].marks == {"A": prog(2, sealed=True)}
    assert b.drain() == []
    assert sent.count == 1 and not sent.report


def test_drain_returns_every_open_batch_then_every_report_in_order():
    b = Batcher(max_bytes=1000, max_wait_s=60, report_s=60)
    b.add(b"k1", recs(b"a"), "A", prog(2))
    b.add(b"k2", recs(b"b", source=SRC_B), "B", prog(2, "/b.log", SRC_B))
    b.report_later(b"k3", "C", prog(5, "/c.log"))
    out = b.drain()
    assert [(x.key, x.count, x.report) for x in out] == [
        (b"k1", 1, False), (b"k2", 1, False), (b"k3", 0, True), (b"k1", 0, True), (b"k2", 0, True)]
    assert len(b) == 0 and b.drain() == []
