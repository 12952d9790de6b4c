"""The spool and the quarantine are not an attack surface: each attack performed through the real
commands (spool transport), then what must hold: no file written through a planted link, no read of
anything but a regular file of bounded size, no forged batch moving what the lake believes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from aggregator import validate
from aggregator.cli.run import main as aggregator
from schemas import record, wire
from schemas.wire import WireError
from shipper.cli import main as shipper
from tests.conftest import cri, free_port, pod_log, wait_for_metrics, write_config

TS = "2026-11-24T10:00:{:02d}.{:09d}Z"
VICTIM = b"precious: must never be overwritten\n"


def write_lines(tmp: Path, first: int, n: int, container: str = "app") -> Path:
    log = pod_log(tmp, "shop", "web-1", container)
    with log.open("a") as f:
        for i in range(first, first + n):
            f.write(cri(TS.format(i % 60, i), f"seq={i}"))
    return log


def ship(config: Path) -> None:
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0


def consume(config: Path) -> None:
    assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0


def seqs(config: Path) -> list[int]:
    import query
    rows = query.connect(str(config)).execute(
        "SELECT CAST(regexp_extract(body, 'seq=([0-9]+)', 1) AS INTEGER) FROM logs ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def source_ids(config: Path) -> list[str]:
    import query
    return [r[0] for r in query.connect(str(config)).execute(
        "SELECT DISTINCT source_id FROM logs ORDER BY 1").fetchall()]


def node_dir(tmp: Path, node: str = "node-a") -> Path:
    return tmp / "spool" / node


def newest_seq(tmp: Path) -> int:
    return max(int(p.name[:20]) for p in node_dir(tmp).glob("*.batch"))


def quarantined(tmp: Path) -> dict[str, dict]:
    """quarantine .batch name -> its note."""
    root = tmp / "lake" / "quarantine"
    return {p.name: orjson.loads(p.with_suffix(".json").read_bytes()) for p in sorted(root.rglob("*.batch"))}


def verify_ok(config: Path, capsys) -> None:
    capsys.readouterr()
    rc = aggregator(["--config", str(config), "verify"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err


def forged(node: str, source_id: str, records: list[dict], positions: list[tuple[int, bool]] = ()) -> bytes:
    """A well-formed batch, as schemas.wire encodes it, of ``records`` of one source."""
    source = orjson.dumps({"namespace": "shop", "pod": "web-1", "container": "app", "source_id": source_id,
                           "source_path": "/var/log/pods/shop_web-1/app/0.log"})
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    runs = [wire.Run(source, lines, len(records))] if records else []
    return wire.encode(node, runs, positions=[(source, off, sealed) for off, sealed in positions])


def stop(proc: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM, and the exit status; a process that ignores it is killed (and the test fails)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"pid {proc.pid} did not stop within {timeout} s of SIGTERM") from None


def rec(offset: int, end: int, **fields) -> dict:
    return {"time": 1_795_514_400_000_000_000, "body": "forged", "source_offset": offset, "source_end": end,
            "stream": "stdout", **fields}


# 1. planted .tmp links ---------------------------------------------------------------------------------

def test_a_planted_tmp_link_is_never_written_through(tmp_path, capsys):
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 5)
    ship(config)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    # the next segment's and the lease's temporary names, pointed at the victim
    lease = tmp_path / "shipper" / "spool-seq"
    nxt = int(lease.read_text())
    seg_tmp = node_dir(tmp_path) / f".{nxt:020d}.batch.tmp"
    lease_tmp = lease.with_name(".spool-seq.tmp")
    for link in (seg_tmp, lease_tmp):
        link.symlink_to(victim)
    write_lines(tmp_path, 5, 5)
    ship(config)
    assert victim.read_bytes() == VICTIM
    assert not os.path.lexists(seg_tmp) and not os.path.lexists(lease_tmp)
    seg = node_dir(tmp_path) / f"{nxt:020d}.batch"
    assert not seg.is_symlink() and wire.decode(seg.read_bytes()).record_count == 5

    # the quarantine's temporary names too
    bad_seq = newest_seq(tmp_path) + 1
    qdir = tmp_path / "lake" / "quarantine" / "spool" / "node-a"
    qdir.mkdir(parents=True, mode=0o700)
    for suffix in ("batch", "json"):
        (qdir / f".{bad_seq:020d}.truncated.{suffix}.tmp").symlink_to(victim)
    (node_dir(tmp_path) / f"{bad_seq:020d}.batch").write_bytes(b"LLKB\x02garbage")
    consume(config)
    assert victim.read_bytes() == VICTIM
    assert seqs(config) == list(range(10))
    q = quarantined(tmp_path)
    assert list(q) == [f"{bad_seq:020d}.truncated.batch"]
    assert (qdir / f"{bad_seq:020d}.truncated.batch").read_bytes() == b"LLKB\x02garbage"
    assert [p.name for p in qdir.iterdir() if p.name.endswith(".tmp")] == []
    verify_ok(config, capsys)


def test_directories_loglake_creates_are_owner_only(tmp_path):
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 3)
    ship(config)
    (node_dir(tmp_path) / f"{newest_seq(tmp_path) + 1:020d}.batch").write_bytes(b"nonsense")
    consume(config)
    for d in (tmp_path / "spool", node_dir(tmp_path), tmp_path / "lake" / "quarantine",
              tmp_path / "lake" / "quarantine" / "spool" / "node-a"):
        assert d.stat().st_mode & 0o777 == 0o700, d


@pytest.mark.parametrize("which", ["spool", "spool/node-a", "lake"])
def test_a_directory_others_may_write_to_is_refused(tmp_path, capsys, which):
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 3)
    ship(config)
    consume(config)
    d = tmp_path / which
    d.chmod(0o777)
    capsys.readouterr()
    command = aggregator if which == "lake" else shipper
    assert command(["--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert f"{d} is writable by other users (mode 0777)" in err and f"run 'chmod go-w {d}'" in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("loglake-")  # one sentence
    if which == "spool":  # the aggregator refuses it as well
        assert aggregator(["--config", str(config), "--once"]) == 1
        assert f"{d} is writable by other users" in capsys.readouterr().err
    d.chmod(0o700)
    write_lines(tmp_path, 3, 2)
    ship(config)
    consume(config)
    assert seqs(config) == list(range(5))


# 2. what is not a regular file of bounded size ---------------------------------------------------------

def test_a_link_to_dev_zero_and_a_fifo_are_quarantined_not_read(tmp_path, capsys):
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 5)
    ship(config)
    s = newest_seq(tmp_path)
    zero = node_dir(tmp_path) / f"{s + 1:020d}.batch"
    fifo = node_dir(tmp_path) / f"{s + 2:020d}.batch"
    big = node_dir(tmp_path) / f"{s + 3:020d}.batch"
    zero.symlink_to("/dev/zero")
    os.mkfifo(fifo)
    with big.open("wb") as f:  # sparse: larger than any batch can be, without taking the room
        f.truncate(300 * 1024 * 1024)
    write_lines(tmp_path, 5, 5)
    ship(config)   # lands after them (the shipper's lease is ahead)
    assert newest_seq(tmp_path) > s + 3
    # a process with a deadline: the unfixed aggregator reads /dev/zero until MemoryError, or blocks on the FIFO
    proc = subprocess.run([sys.executable, "-m", "aggregator.cli", "--config", str(config), "--once"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    assert seqs(config) == list(range(10))
    q = quarantined(tmp_path)
    assert list(q) == [f"{s + 1:020d}.not_a_file.batch", f"{s + 2:020d}.not_a_file.batch",
                       f"{s + 3:020d}.too_large.batch"]
    assert "is a symbolic link to '/dev/zero'" in q[f"{s + 1:020d}.not_a_file.batch"]["message"]
    assert "is a FIFO" in q[f"{s + 2:020d}.not_a_file.batch"]["message"]
    assert "holds 314572800 bytes" in q[f"{s + 3:020d}.too_large.batch"]["message"]
    assert all(n["bytes"] == 0 for n in q.values())
    # moved aside, never read again: another run has nothing to do, and quarantines nothing more
    for p in (zero, fifo, big):
        assert not os.path.lexists(p)
    assert (node_dir(tmp_path) / f".{zero.name}.not_a_file").is_symlink()
    consume(config)
    assert len(quarantined(tmp_path)) == 3 and seqs(config) == list(range(10))
    verify_ok(config, capsys)


def test_a_fifo_does_not_keep_the_aggregator_from_stopping(tmp_path):
    port = free_port()
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}"})
    write_lines(tmp_path, 0, 5)
    ship(config)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_metrics(port, "loglake_aggregator_stored_records_total 5.0\n", "the aggregator never stored the lines")
        os.mkfifo(node_dir(tmp_path) / f"{newest_seq(tmp_path) + 1:020d}.batch")   # planted while it runs
        wait_for_metrics(port, 'loglake_aggregator_quarantined_batches_total{reason="not_a_file"} 1.0\n',
                         "the FIFO was never quarantined")
        write_lines(tmp_path, 5, 5)
        ship(config)
        wait_for_metrics(port, "loglake_aggregator_stored_records_total 10.0\n", "later lines never stored")
    finally:
        started = time.monotonic()
        rc = stop(proc)
    assert rc == 0 and time.monotonic() - started < 10
    assert b"Traceback" not in proc.stderr.read()
    assert seqs(config) == list(range(10))


# 3. forged batches -------------------------------------------------------------------------------------

def test_a_forged_batch_cannot_silence_a_source(tmp_path, capsys):
    """A batch with the victim's source id at offset 2^62 would move its dedup mark so far that every
    later record of that source is dropped; one with another node's source id would speak for it."""
    port = free_port()
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}"})
    write_lines(tmp_path, 0, 10)
    ship(config)
    consume(config)
    [victim] = source_ids(config)
    assert victim.startswith("node-a:")
    s = newest_seq(tmp_path)
    high = 2 ** 62
    (node_dir(tmp_path) / f"{s + 1:020d}.batch").write_bytes(
        forged("node-a", victim, [rec(high, high + 20)], positions=[(high + 20, False)]))
    other = "node-b:" + victim.split(":", 1)[1]
    (node_dir(tmp_path) / f"{s + 2:020d}.batch").write_bytes(forged("node-a", other, [rec(0, 20)]))
    write_lines(tmp_path, 10, 10)
    ship(config)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = wait_for_metrics(port, 'loglake_aggregator_quarantined_batches_total{reason="invalid"} 2.0\n',
                                "the forged batches were not quarantined as invalid")
        assert 'loglake_aggregator_quarantined_batches_total{reason="schema"} 0.0\n' in body
        wait_for_metrics(port, "loglake_aggregator_stored_records_total 10.0\n", "the later lines were not stored")
    finally:
        assert stop(proc) == 0
    assert b"Traceback" not in proc.stderr.read()
    assert seqs(config) == list(range(20))
    q = quarantined(tmp_path)
    assert list(q) == [f"{s + 1:020d}.invalid.batch", f"{s + 2:020d}.invalid.batch"]
    assert f"byte {high}" in q[f"{s + 1:020d}.invalid.batch"]["message"]
    assert f"{other!r}, which node 'node-a' does not ship" in q[f"{s + 2:020d}.invalid.batch"]["message"]
    # the forged length never reached the lake either: no gap up to 2^62
    verify_ok(config, capsys)
    write_lines(tmp_path, 20, 5)
    ship(config)
    consume(config)
    assert seqs(config) == list(range(25))


def test_a_mark_left_by_an_earlier_forgery_no_longer_silences_its_source(tmp_path):
    """A lake that consumed such a forgery before the check existed: its mark is not used."""
    from lake.catalog.sqlite import SqliteCatalog
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 5)
    ship(config)
    consume(config)
    [victim] = source_ids(config)
    catalog = SqliteCatalog(tmp_path / "lake" / "catalog.sqlite")
    try:
        catalog.commit(None, "spool", "node-a", catalog.positions("spool")["node-a"], {(victim, "stdout"): 2 ** 62})
    finally:
        catalog.close()
    write_lines(tmp_path, 5, 5)
    ship(config)
    consume(config)
    assert seqs(config) == list(range(10))
    catalog = SqliteCatalog(tmp_path / "lake" / "catalog.sqlite")
    try:  # and the next commit replaced the poisoned mark for good
        assert 0 < catalog.source_marks("spool")["node-a"][(victim, "stdout")] < 2 ** 48
    finally:
        catalog.close()


def test_positions_are_not_a_bound_on_records(tmp_path, capsys):
    """A batch may carry records past the position it reports (here, stderr lines after a stdout line
    still being joined, which is where the shipper would resume): the validation must not take it for
    a forgery."""
    config = write_config(tmp_path, shipper={"poll_interval_ms": 50})
    log = pod_log(tmp_path, "shop", "web-1", "app")
    log.write_text(cri(TS.format(0, 0), "seq=0 start ", tag="P")
                   + "".join(cri(TS.format(1, i), f"seq={i}", stream="stderr") for i in range(1, 4)))
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stored(expected: list[int]) -> None:
        deadline = time.monotonic() + 30
        while True:
            consume(config)
            if seqs(config) == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seqs(config) == expected and quarantined(tmp_path) == {}
    try:
        stored([1, 2, 3])
        with log.open("a") as f:
            f.write(cri(TS.format(2, 0), "and its end"))
        stored([0, 1, 2, 3])
    finally:
        assert stop(proc) == 0
    consume(config)
    verify_ok(config, capsys)


def test_a_record_flagged_time_claimed_is_accepted(tmp_path):
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 2)
    ship(config)
    own = "node-a:" + "0123456789abcdef"
    (node_dir(tmp_path) / f"{newest_seq(tmp_path) + 1:020d}.batch").write_bytes(
        forged("node-a", own, [rec(0, 10, flags=record.FLAG_TIME_CLAIMED, body="seq=7")]))
    consume(config)
    assert quarantined(tmp_path) == {} and seqs(config) == [0, 1, 7]


# the rules, one by one ----------------------------------------------------------------------------------

OWN = "node-a:0123456789abcdef"


def check(records: list[dict], source_id: str = OWN, positions: list[tuple[int, bool]] = ()) -> None:
    batch = wire.decode(forged("node-a", source_id, records, positions))
    validate.check(batch, wire.to_table(batch), wire.extents(batch))


@pytest.mark.parametrize("source_id", [OWN, OWN + ":803:1a2b", "node-a:803:1a2b:deadbeef"])
def test_the_ids_a_shipper_makes_are_accepted(source_id):
    check([rec(0, 10), rec(10, 20), rec(20, 25, stream="stderr")], source_id, positions=[(20, False)])


def test_what_the_shipper_sends_is_accepted():
    check([rec(0, 100, stream="stdout"), rec(40, 60, stream="stderr"), rec(100, 120, stream="stdout"),
           rec(120, 130, stream=None, trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7",
               severity_number=24, flags=record.KNOWN_FLAGS, observed_time=0)],
          positions=[(40, False)])   # a position below records already out: a stdout line was being joined
    check([], positions=[(1 << 40, True)])  # a report


@pytest.mark.parametrize("source_id,records,positions,needle", [
    ("node-b:0123456789abcdef", [rec(0, 10)], [], "'node-b:0123456789abcdef', which node 'node-a' does not ship"),
    ("node-b:0123456789abcdef", [], [(10, False)], "reports a position of source 'node-b:0123456789abcdef'"),
    ("node-a", [rec(0, 10)], [], "does not ship"),
    ("node-a:0123456789ABCDEF", [rec(0, 10)], [], "does not ship"),
    ("node-a:0123456789abcdef@1", [rec(0, 10)], [], "does not ship"),
    ("node-a-2:0123456789abcdef", [rec(0, 10)], [], "does not ship"),
    (OWN, [], [(0, False)], None),
    (OWN, [rec(0, 10)], [(2 ** 62, False)], "beyond any log file"),
    (OWN, [rec(2 ** 62, 2 ** 62 + 1)], [], "at byte 4611686018427387904"),
    (OWN, [rec(10, 10)], [], "0 <= offset < end"),
    (OWN, [rec(10, 5)], [], "0 <= offset < end"),
    (OWN, [rec(0, 10), rec(5, 15)], [], "comes after one spanning bytes [0, 10)"),
    (OWN, [rec(10, 20), rec(0, 10)], [], "comes after one spanning bytes [10, 20)"),
    (OWN, [rec(0, 10, stream=None), rec(0, 10, stream=None)], [], "in offset order"),
    (OWN, [rec(0, 10, severity_number=25)], [], "severity_number 25"),
    (OWN, [rec(0, 10, severity_number=-1)], [], "severity_number -1"),
    (OWN, [rec(0, 10, flags=1 << 7)], [], "flags 0x80"),
    (OWN, [rec(0, 10, flags=-1)], [], "flags"),
    (OWN, [rec(0, 10, trace_id="4BF92F3577B34DA6A3CE929D0E0E4736")], [], "not 32 lowercase hex digits"),
    (OWN, [rec(0, 10, trace_id="abc")], [], "not 32 lowercase hex digits"),
    (OWN, [rec(0, 10, span_id="00f067aa0ba902b7x")], [], "not 16 lowercase hex digits"),
    (OWN, [rec(0, 10, time=-1)], [], "time -1 ns"),
    (OWN, [rec(0, 10, observed_time=-5)], [], "observed_time -5 ns"),
])
def test_what_no_shipper_sends_is_invalid(source_id, records, positions, needle):
    if needle is None:
        check(records, source_id, positions)
        return
    with pytest.raises(WireError, match="batch is not one a shipper sends") as e:
        check(records, source_id, positions)
    assert e.value.reason == "invalid" and needle in str(e.value)


def test_a_small_batch_that_would_expand_without_limit_is_quarantined(tmp_path):
    """27 KB on the wire: one source with a 1 MiB field and 20,000 records would be 20 GB once every record
    carries its source's fields; it once crashed the aggregator at every start. Now it is refused whole
    (quarantined, counted) and the lines after it flow."""
    config = write_config(tmp_path)
    write_lines(tmp_path, 0, 10)
    ship(config)
    consume(config)
    [victim] = source_ids(config)
    source = orjson.dumps({"source_id": victim, "source_path": "/var/log/app.log", "resource": "{\"a\":\"" +
                           "x" * (1 << 20) + "\"}"})
    lines = b"".join(orjson.dumps(rec(i, i + 1)) + b"\n" for i in range(20_000))
    batch = wire.encode("node-a", [wire.Run(source, lines, 20_000)])
    assert len(batch) < 64 * 1024
    (node_dir(tmp_path) / f"{newest_seq(tmp_path) + 1:020d}.batch").write_bytes(batch)
    write_lines(tmp_path, 10, 10)
    ship(config)
    consume(config)
    assert seqs(config) == list(range(20))
    [(name, note)] = quarantined(tmp_path).items()
    assert name.endswith(".schema.batch") and "would expand to" in note["message"]
