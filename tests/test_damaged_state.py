"""A state directory that cannot be written, or state that is not what loglake wrote, is a warning or
one sentence, never a traceback, and loses no line.

- an unwritable data_dir (a path under a file for anyone; a read-only mount when run as root) stops
  the shipper and the aggregator at start with one sentence naming the directory (exit 1, like any
  configuration error), and once it is writable again everything arrives exactly once;
- a checkpoint entry that is not a position is skipped with a warning naming it, and its file is read
  again from the start (the lake drops what it has by id), the others keep their positions; a
  checkpoint file that is not parseable at all, or a damaged disk-buffer segment, is moved aside;
- a catalog value of the wrong kind is one sentence naming the catalog, the row and the value, in
  ``verify`` as in every other command, and ``malformed()`` lists them all.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import pod_log, write_config
from tests.test_rotation import exactly, once, seq_lines, seqs, verify

ROOT = Path(__file__).resolve().parent.parent


def run_out(command: str, config: Path, *args: str) -> tuple[int, str, str]:
    """Run a loglake command as its own process: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", f"{command}.cli", "--config", str(config), *args], cwd=ROOT,
                       capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def run(command: str, config: Path, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of run_out."""
    rc, _, err = run_out(command, config, *args)
    return rc, err


def one_sentence(err: str, prefix: str) -> str:
    """The last stderr line, which must be the whole error: one line, no traceback."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(prefix), err
    return last


def three_files(tmp: Path, first: int, n: int) -> list[Path]:
    """Three containers, each given ``n`` more lines numbered from ``first + k * 1000``."""
    out = []
    for k, name in enumerate(("api", "web", "db")):
        p = pod_log(tmp, "shop", f"{name}-1", name)
        with p.open("a") as f:
            f.write(seq_lines(first + k * 1000, n))
        out.append(p)
    return out


def expected(n: int) -> set[int]:
    return {k * 1000 + i for k in range(3) for i in range(n)}


def exactly_these(found, want: set[int]) -> None:
    lost = sorted(want - set(found))
    twice = sorted(s for s, c in found.items() if c > 1)
    assert not lost and not twice and set(found) == want, f"lost {lost[:20]}, stored twice {twice[:20]}"


# an unwritable data_dir --------------------------------------------------------------------------


def test_data_dir_under_a_file_is_one_sentence(tmp_path):
    blocker = tmp_path / "state-file"
    blocker.write_text("not a directory\n")
    config = write_config(tmp_path, shipper={"data_dir": str(blocker / "shipper")})
    config.write_text(config.read_text().replace(f'data_dir = "{tmp_path / "lake"}"',
                                                 f'data_dir = "{blocker / "lake"}"'))
    three_files(tmp_path, 0, 3)
    rc, err = run("shipper", config, "--once")
    line = one_sentence(err, "loglake-shipper: ")
    assert rc == 1 and f"the shipper data directory {blocker / 'shipper'} cannot be written (Not a directory)" in line
    assert "point [shipper] data_dir" in line
    rc, err = run("aggregator", config, "--once")
    line = one_sentence(err, "loglake-aggregator: ")
    assert rc == 1 and f"the aggregator data directory {blocker / 'lake'} cannot be written (Not a directory)" in line
    rc, err = run("aggregator", config, "verify")   # reads the master key first: named with the reason
    line = one_sentence(err, "loglake-aggregator: ")
    assert rc == 1 and f"{blocker / 'lake'}" in line and "(Not a directory)" in line, line


def test_read_only_data_dirs_stop_with_one_sentence_and_lose_nothing(tmp_path, capsys):
    """The same state seen through a read-only bind mount (as a read-only volume would be), then
    writable again."""
    state, view = tmp_path / "state", tmp_path / "ro"
    state.mkdir(mode=0o700)
    view.mkdir(mode=0o700)
    if subprocess.run(["mount", "--bind", str(state), str(view)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        assert subprocess.run(["mount", "-o", "remount,ro,bind", str(view)]).returncode == 0
        config = write_config(tmp_path, shipper={"data_dir": str(state / "shipper")})
        config.write_text(config.read_text().replace(f'data_dir = "{tmp_path / "lake"}"',
                                                     f'data_dir = "{state / "lake"}"'))
        read_only = tmp_path / "read-only.toml"
        read_only.write_text(config.read_text().replace(f'"{state}/', f'"{view}/'))
        three_files(tmp_path, 0, 5)
        once(config)
        exactly_these(seqs(config), expected(5))
        three_files(tmp_path, 5, 5)
        rc, err = run("shipper", read_only, "--once")
        line = one_sentence(err, "loglake-shipper: ")
        assert rc == 1 and f"{view / 'shipper'} cannot be written (Read-only file system)" in line, line
        for args in (["--once"], ["verify"]):
            rc, err = run("aggregator", read_only, *args)
            line = one_sentence(err, "loglake-aggregator: ")
            assert rc == 1 and f"the aggregator data directory {view / 'lake'} cannot be written" in line, line
        once(config)   # writable again: everything once
        exactly_these(seqs(config), expected(10))
        assert verify(config, capsys)[0] == 0
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)


# the shipper's checkpoint and disk buffer --------------------------------------------------------


def test_malformed_checkpoint_entries_are_skipped_and_read_again(tmp_path, capsys):
    config = write_config(tmp_path)
    files = three_files(tmp_path, 0, 20)
    once(config)
    cp_path = tmp_path / "shipper" / "checkpoints.json"
    cp = orjson.loads(cp_path.read_bytes())
    by_path = {s["path"]: sid for sid, s in cp["sources"].items()}
    api, web, db = (by_path[str(p)] for p in files)
    cp["sources"][api]["offset"] = "1234x"          # not a number
    del cp["sources"][web]["window"]                 # a field missing
    kept = cp["sources"][db]["offset"]
    cp_path.write_bytes(orjson.dumps(cp))
    three_files(tmp_path, 20, 5)
    rc, err = run("shipper", config, "--once", "--log-level", "WARNING")
    assert rc == 0 and "Traceback" not in err, err
    warnings = [orjson.loads(line) for line in err.splitlines() if "checkpoint entry skipped" in line]
    assert {w["source_id"] for w in warnings} == {api, web}
    assert {w["problem"] for w in warnings} == {"offset '1234x' is not a whole number of bytes",
                                                "window None is not a CRC-32"}
    saved = orjson.loads(cp_path.read_bytes())["sources"]
    assert saved[db]["offset"] > kept
    assert [saved[sid]["offset"] for sid in (api, web, db)] == [p.stat().st_size for p in files]
    exactly_these(seqs(config), expected(25))       # read again from 0: the lake dropped what it had
    rc, out = verify(config, capsys)
    assert rc == 0 and "duplicates: 0 records" in out, out


@pytest.mark.parametrize("damage", [b'{"version": 2, "created_at": 17955', b"[1, 2, 3]",
                                    b'{"version": "two", "sources": {}}', b'{"version": 2, "sources": [1]}'])
def test_an_unreadable_checkpoint_file_is_moved_aside(tmp_path, capsys, damage):
    config = write_config(tmp_path)
    three_files(tmp_path, 0, 10)
    once(config)
    cp_path = tmp_path / "shipper" / "checkpoints.json"
    cp_path.write_bytes(damage)
    three_files(tmp_path, 10, 5)
    rc, err = run("shipper", config, "--once", "--log-level", "WARNING")
    assert rc == 0 and "Traceback" not in err, err
    assert "checkpoint file damaged; moved aside" in err
    aside = list(cp_path.parent.glob("checkpoints.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damage
    assert orjson.loads(cp_path.read_bytes())["version"] == 2
    exactly_these(seqs(config), expected(15))


def test_a_damaged_buffer_segment_is_moved_aside(tmp_path):
    config = write_config(tmp_path)
    three_files(tmp_path, 0, 10)
    buffer = tmp_path / "shipper" / "buffer"
    buffer.mkdir(parents=True, mode=0o700)
    (buffer / f"{0:020d}.buf").write_bytes(b"\x00\x00\x00\x40{not a header")
    rc, err = run("shipper", config, "--once", "--log-level", "WARNING")
    assert rc == 0 and "Traceback" not in err, err
    assert "disk buffer segment damaged; moved aside" in err
    assert (buffer / f".{0:020d}.buf.damaged").exists()
    exactly_these(seqs(config), expected(10))


# the aggregator's catalog ------------------------------------------------------------------------


def lake(tmp: Path) -> Path:
    config = write_config(tmp)
    live = pod_log(tmp, "shop", "web-1", "nginx")
    live.write_text(seq_lines(0, 20))
    once(config)
    assert seqs(config)   # consumed: the catalog lists a file
    return config


@pytest.mark.parametrize("sql, named", [
    ("UPDATE files SET rows = 'abc'", "has rows = 'abc', not an integer"),
    ("UPDATE files SET namespaces = '[\"shop\"'", "has namespaces = '[\"shop\"', not a JSON array of text"),
    ("UPDATE files SET tier = 'lukewarm'", "has tier = 'lukewarm', not one of hot, warm, cold"),
    ("INSERT OR REPLACE INTO meta VALUES ('audit_head', 'garbage')",
     "meta row audit_head has value = 'garbage', not <seq>:<hex digest>"),
])
def test_a_malformed_catalog_value_is_one_sentence_in_verify_and_queries(tmp_path, sql, named):
    config = lake(tmp_path)
    catalog = tmp_path / "lake" / "catalog.sqlite"
    with sqlite3.connect(catalog) as db:
        db.execute(sql)
    rc, out, err = run_out("aggregator", config, "verify")
    findings = [ln for ln in out.splitlines() if ln.startswith("  malformed: catalog ")]
    assert rc == 1 and err == "" and out.rstrip().endswith("verify: FAILED"), (out, err)
    assert len(findings) == 1 and f"malformed: catalog {catalog}: " in findings[0] and named in findings[0]
    assert "restore the catalog" in findings[0]
    from lake.catalog.sqlite import SqliteCatalog
    problems = SqliteCatalog(catalog).malformed()
    assert len(problems) == 1 and named in problems[0]
    if "audit_head" not in sql:
        rc, err = run("query", config, "sql", "SELECT count(*) FROM logs")
        assert rc == 1 and named in one_sentence(err, "loglake-query: ")


def test_a_malformed_position_stops_the_aggregator_with_one_sentence(tmp_path):
    config = lake(tmp_path)
    catalog = tmp_path / "lake" / "catalog.sqlite"
    with sqlite3.connect(catalog) as db:
        db.execute("UPDATE positions SET next_offset = 'soon'")
    rc, err = run("aggregator", config, "--once")
    line = one_sentence(err, "loglake-aggregator: ")
    assert rc == 1 and "positions row" in line and "has next_offset = 'soon', not an integer" in line, line


def test_a_catalog_that_is_no_database_is_one_sentence(tmp_path):
    config = lake(tmp_path)
    catalog = tmp_path / "lake" / "catalog.sqlite"
    for extra in catalog.parent.glob("catalog.sqlite-*"):
        extra.unlink()
    catalog.write_bytes(b"this is not a database" * 100)
    rc, err = run("aggregator", config, "verify")
    line = one_sentence(err, "loglake-aggregator: ")
    assert rc == 1 and f"the catalog {catalog} cannot be opened (file is not a database)" in line, line


def test_malformed_lists_every_bad_value(tmp_path):
    from lake.catalog.sqlite import SqliteCatalog
    cat = SqliteCatalog(tmp_path / "catalog.sqlite")
    assert cat.malformed() == []
    cat._db.execute("INSERT INTO positions VALUES ('t', '0', 'x')")
    cat._db.execute("INSERT INTO source_extents VALUES ('s1', 'p', 1.5, 0, 0)")
    cat._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', 'three')")
    problems = cat.malformed()
    assert len(problems) == 3
    assert any("positions row t, 0 has next_offset = 'x', not an integer" in p for p in problems)
    assert any("source_extents row s1 has length = 1.5, not an integer" in p for p in problems)
    assert any("meta row schema_version has value = 'three', not a whole number" in p for p in problems)
    assert cat.malformed(limit=2) == problems[:2]
