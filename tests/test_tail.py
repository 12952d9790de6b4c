"""shipper.tail.FileTail on real files: complete lines from an offset, overlong lines cut, the last
unterminated line read only once the file is finished, and what it does with entries that are not
regular files (the caller checks the file type; FileTail only must not hang or follow a link)."""

from __future__ import annotations

import errno
import os
import signal
import stat
from pathlib import Path

import pytest

from shipper.tail import Chunk, FileTail


def tail_of(path: Path, data: bytes, offset: int = 0) -> FileTail:
    path.write_bytes(data)
    return FileTail.open(str(path), offset)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.fixture
def closing():
    """Tails opened by a test, closed after it."""
    tails: list[FileTail] = []
    yield tails.append
    for t in tails:
        t.close()


def test_reads_complete_lines_from_an_offset_and_stops_on_a_line_boundary(tmp_path, closing):
    t = tail_of(tmp_path / "a.log", b"one\ntwo\nthree\n", offset=4)
    closing(t)
    assert t.read(1024, 100) == Chunk(b"two\nthree\n", 4, 14, True)
    assert t.offset == 14
    # nothing new: an empty chunk at the end, still at_eof
    assert t.read(1024, 100) == Chunk(b"", 14, 14, True)


def test_an_unterminated_line_is_left_unread_until_its_newline_comes(tmp_path, closing):
    path = tmp_path / "a.log"
    t = tail_of(path, b"one\ntw")
    closing(t)
    assert t.read(1024, 100) == Chunk(b"one\n", 0, 4, False)
    assert t.read(1024, 100) == Chunk(b"", 4, 4, True)
    assert t.offset == 4 and t.unread() == 2
    append(path, b"o\nthr")
    assert t.read(1024, 100) == Chunk(b"two\n", 4, 8, False)
    assert t.unread() == 3


def test_max_bytes_bounds_a_read_to_whole_lines(tmp_path, closing):
    lines = [f"line-{i:04d}\n".encode() for i in range(10)]  # 10 bytes each
    t = tail_of(tmp_path / "a.log", b"".join(lines))
    closing(t)
    chunks = []
    while True:
        c = t.read(25, 10)
        chunks.append(c)
        if c.at_eof:
            break
    # 25 bytes hold two whole lines each time; the last read finds the end
    assert [c.data for c in chunks] == [lines[i] + lines[i + 1] for i in range(0, 10, 2)]
    assert [(c.start, c.end) for c in chunks] == [(i * 10, i * 10 + 20) for i in range(0, 10, 2)]
    assert [c.at_eof for c in chunks] == [False, False, False, False, True]


def test_a_read_is_never_smaller_than_one_whole_record(tmp_path, closing):
    """max_bytes below the maximum line: a line up to max_line bytes still comes whole."""
    t = tail_of(tmp_path / "a.log", b"x" * 40 + b"\n" + b"tail\n")
    closing(t)
    c = t.read(4, 50)
    assert c == Chunk(b"x" * 40 + b"\n" + b"tail\n", 0, 46, True)
    assert not c.cut


def test_an_overlong_line_is_cut_and_its_rest_skipped_to_its_newline(tmp_path, closing):
    data = b"x" * 30 + b"\n" + b"ok\n"
    t = tail_of(tmp_path / "a.log", data)
    closing(t)
    head = t.read(8, 10)
    assert head == Chunk(b"x" * 10, 0, 10, False, cut=True)
    # a checkpoint must not pass the start of the line being skipped
    assert t.cut_from == 0
    out = [head]
    while t.offset < len(data) or t.cut_from is not None:
        out.append(t.read(8, 10))
    assert b"".join(c.data for c in out) == b"x" * 10 + b"ok\n"  # the rest of the long line never comes out
    assert t.cut_from is None and t.offset == len(data)
    assert [c.cut for c in out].count(True) == 1
    # ends go forward without gaps or overlaps
    ends = [c.end for c in out]
    assert ends == sorted(ends) and ends[-1] == len(data)


def test_at_eof_after_skipping_a_cut_line_is_only_set_at_the_real_end(tmp_path, closing):
    data = b"x" * 30 + b"\n" + b"ok\n"
    t = tail_of(tmp_path / "a.log", data)
    closing(t)
    t.read(8, 10)       # head of the overlong line, cut
    t.read(8, 10)       # skipping: no newline in this window
    c = t.read(8, 10)   # the newline of the long line, then "o": "ok\n" is still unread
    assert t.size() - t.offset == 3
    assert not c.at_eof, c


def test_a_cut_line_without_any_newline_is_skipped_to_the_end_of_the_file(tmp_path, closing):
    path = tmp_path / "a.log"
    t = tail_of(path, b"y" * 25)
    closing(t)
    assert t.read(8, 10) == Chunk(b"y" * 10, 0, 10, False, cut=True)
    while not (c := t.read(8, 10)).at_eof:
        assert c.data == b""
    assert t.offset == 25 and t.cut_from == 0  # still inside the overlong line
    # its newline arrives with the next line: the skip ends there and the next line comes out whole
    append(path, b"yy\nnext\n")
    c = t.read(1024, 10)
    assert c == Chunk(b"next\n", 28, 33, True)
    assert t.cut_from is None


def test_read_rest_gives_the_unterminated_last_line_of_a_finished_file(tmp_path, closing):
    t = tail_of(tmp_path / "a.log", b"one\nlast without newline")
    closing(t)
    assert t.read(1024, 100).data == b"one\n"
    rest = t.read_rest(100)
    assert rest == Chunk(b"last without newline", 4, 24, True)
    assert t.offset == 24 and t.unread() == 0
    # nothing after it
    assert t.read_rest(100) == Chunk(b"", 24, 24, True)


def test_read_rest_leaves_lines_that_came_since_the_last_read_to_a_normal_read(tmp_path, closing):
    path = tmp_path / "a.log"
    t = tail_of(path, b"one\npart")
    closing(t)
    t.read(1024, 100)
    append(path, b"ial\nmore")
    assert t.read_rest(100) == Chunk(b"", 4, 4, False)
    assert t.offset == 4
    assert t.read(1024, 100) == Chunk(b"partial\n", 4, 12, False)
    assert t.read_rest(100) == Chunk(b"more", 12, 16, True)


def test_read_rest_while_skipping_a_cut_line_does_not_finish_over_new_lines(tmp_path, closing):
    path = tmp_path / "a.log"
    t = tail_of(path, b"z" * 30)
    closing(t)
    while not t.read(8, 10).at_eof:
        pass
    assert t.cut_from == 0 and t.offset == 30
    append(path, b"zz\nlast line\n")   # the long line ends, a whole line follows, before the file is finished
    rest = t.read_rest(10)
    assert not rest.at_eof, "a complete line is unread; the caller must read it before closing the file"


def test_size_and_unread_follow_growth_and_truncation(tmp_path, closing):
    path = tmp_path / "a.log"
    t = tail_of(path, b"0123456789\n")
    closing(t)
    assert (t.size(), t.unread()) == (11, 11)
    t.read(1024, 100)
    assert (t.size(), t.unread()) == (11, 0)
    append(path, b"abc\n")
    assert (t.size(), t.unread()) == (15, 4)
    t.read(1024, 100)
    # copytruncate: the descriptor sees the file shrink below the offset; a read gives nothing
    os.truncate(path, 0)
    path.write_bytes(b"new\n")
    assert t.size() == 4 < t.offset == 15
    assert t.unread() == 0
    assert t.read(1024, 100) == Chunk(b"", 15, 15, True)


def test_a_renamed_or_deleted_file_stays_readable_through_the_descriptor(tmp_path, closing):
    path = tmp_path / "a.log"
    t = tail_of(path, b"one\n")
    closing(t)
    t.read(1024, 100)
    append(path, b"two\n")
    path.rename(tmp_path / "a.log.1")
    (tmp_path / "a.log.1").unlink()
    assert t.read(1024, 100) == Chunk(b"two\n", 4, 8, True)


def test_close_is_idempotent_and_unread_is_zero_once_closed(tmp_path):
    t = tail_of(tmp_path / "a.log", b"unread\n")
    fd = t.fd
    t.close()
    t.close()
    assert t.fd == -1 and t.unread() == 0
    with pytest.raises(OSError):
        os.fstat(fd)


def test_follow_false_refuses_a_symlink_and_follow_true_reads_its_target(tmp_path, closing):
    target = tmp_path / "secret.key"
    target.write_bytes(b"key material\n")
    link = tmp_path / "app.log"
    link.symlink_to(target)
    with pytest.raises(OSError) as e:
        FileTail.open(str(link), follow=False)
    assert e.value.errno == errno.ELOOP
    t = FileTail.open(str(link))
    closing(t)
    assert t.read(1024, 100).data == b"key material\n"
    # a regular file opens the same either way
    t2 = FileTail.open(str(target), follow=False)
    closing(t2)
    assert t2.read(1024, 100).data == b"key material\n"


def test_a_fifo_opens_without_waiting_for_a_writer_and_cannot_be_read(tmp_path, closing):
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening a FIFO blocked"))
    signal.alarm(5)
    try:
        t = FileTail.open(str(fifo), follow=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    closing(t)
    # the caller sees it is not a regular file on the descriptor (shipper.agent checks S_ISREG)
    assert stat.S_ISFIFO(os.fstat(t.fd).st_mode)
    with pytest.raises(OSError) as e:
        t.read(1024, 100)
    assert e.value.errno == errno.ESPIPE


def test_a_directory_opens_but_is_not_a_regular_file_and_cannot_be_read(tmp_path, closing):
    d = tmp_path / "0.log"
    d.mkdir()
    t = FileTail.open(str(d), follow=False)
    closing(t)
    assert stat.S_ISDIR(os.fstat(t.fd).st_mode)
    with pytest.raises(IsADirectoryError):
        t.read(1024, 100)
    with pytest.raises(IsADirectoryError):
        t.read_rest(100)
