"""loglake-query on ordinary use never ends in a traceback (issue 13): empty results, extreme and compound
times, RE2 patterns checked by RE2, trace ids as people write them, and a reader that stops early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lake.selector import MAX_TIME_NS, SelectorError, parse_time
from query.cli import main as q
from tests.conftest import lake_trace, module_lake

QUERY = str(Path(sys.executable).parent / "loglake-query")  # the installed console script, as a person runs it
LINE_HEADER = ["time", "namespace", "pod", "container", "stream", "level", "trace_id", "body"]
NOW = 1_795_215_600 * 10**9  # 2026-11-20T23:00:00Z


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return module_lake(tmp_path_factory, "robust", rounds=4, lines=60)


def run(capsys, config, *argv: str) -> tuple[int, str, str]:
    rc = q(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_sentence(capsys, config, *argv: str) -> str:
    rc, out, err = run(capsys, config, *argv)
    assert rc == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err, (rc, out, err)
    return err


# Each command, asked for something that is not there. --since 1m: the lake's lines are days old.
EMPTY = {
    "sql": (("sql", "SELECT time, body FROM logs WHERE false"), ["time", "body"]),
    "trace": (("trace", "ffffffffffffffffffffffffffffffff"),
              ["time", "namespace", "pod", "container", "level", "span_id", "body"]),
    "logs -n": (("logs", "-n", "nosuch", "--since", "all"), LINE_HEADER),
    "logs --since": (("logs", "--since", "1m"), LINE_HEADER),
    "stats": (("stats", "-n", "nosuch", "--by", "namespace,level"), ["namespace", "level", "lines", "bytes"]),
}


@pytest.mark.parametrize("name", EMPTY)
def test_empty_results_in_every_format(lake, capsys, name):
    _, config, _ = lake
    argv, header = EMPTY[name]
    rc, out, err = run(capsys, config, "--format", "table", *argv)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == header and set(lines[1].replace(" ", "")) == {"-"} and lines[2:] == ["(0 rows)"]
    assert run(capsys, config, "--format", "json", *argv) == (0, "", "")
    assert run(capsys, config, "--format", "csv", *argv) == (0, ",".join(header) + "\n", "")


def test_empty_tail(lake, capsys):
    """tail is a stream of lines: its table form never has a header (later lines are appended under the
    first), so nothing to show prints nothing; csv keeps its header line."""
    _, config, _ = lake
    assert run(capsys, config, "tail", "-n", "nosuch") == (0, "", "")
    assert run(capsys, config, "--format", "json", "tail", "--since", "1m") == (0, "", "")
    assert run(capsys, config, "--format", "csv", "tail", "-n", "nosuch") == (0, ",".join(LINE_HEADER) + "\n", "")


def test_empty_export_is_a_signed_archive_of_nothing(lake, capsys, tmp_path):
    _, config, _ = lake
    rc, out, err = run(capsys, config, "export", "--since", "1m", "--out", str(tmp_path / "none.zip"))
    assert rc == 0 and out.startswith(f"exported 0 records to {tmp_path / 'none.zip'}") and err == ""
    rc, out, _ = run(capsys, config, "verify-export", str(tmp_path / "none.zip"))
    assert rc == 0 and "intact, 0 records" in out


def test_empty_parquet_output(lake, capsys, tmp_path):
    import pyarrow.parquet as pq
    _, config, _ = lake
    rc, _, err = run(capsys, config, "logs", "-n", "nosuch", "--output-file", str(tmp_path / "none.parquet"))
    assert rc == 0 and "wrote 0 rows" in err
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def count(capsys, config, *argv: str) -> int:
    rc, out, err = run(capsys, config, "--format", "json", "logs", "--limit", "0", *argv)
    assert rc == 0, err
    return len(out.splitlines())


def test_extreme_times_clamp_to_what_is_stored(lake, capsys):
    _, config, n = lake
    assert count(capsys, config, "--since", "all") == n
    # a duration reaching back before 1970, or a date before it: from the beginning (nothing is older)
    assert count(capsys, config, "--since", "99999999999d") == n
    assert count(capsys, config, "--since", "9" * 5000 + "y") == n
    assert count(capsys, config, "--since", "0001-01-01") == n
    assert count(capsys, config, "--since", "0001-01-01T00:00:00+01:00") == n
    assert count(capsys, config, "--since", "0001-01-01", "--until", "1969-12-31") == 0
    assert count(capsys, config, "--since", "all", "--until", "2262-04-11T23:47:16Z") == n
    assert count(capsys, config, "--since", "2262-04-11T23:47:16.854775806Z") == 0
    assert count(capsys, config, "--since", "all", "--until", "99999999999d") == 0  # until 1970: nothing
    rc, out, _ = run(capsys, config, "--format", "json", "stats", "--since", "99999999999d", "--by", "namespace")
    assert rc == 0 and sum(json.loads(line)["lines"] for line in out.splitlines()) == n


@pytest.mark.parametrize("argv", [("--since", "2300-01-01"), ("--until", "2262-04-12"),
                                  ("--since", "9999-12-31T23:59:59-01:00")])
def test_times_past_2262_are_one_sentence(lake, capsys, argv):
    _, config, _ = lake
    err = one_sentence(capsys, config, "logs", *argv)
    assert err.startswith(f"loglake-query: time {argv[1]!r} is after 2262-04-11T23:47:16")


def test_compound_durations():
    assert NOW - parse_time("1h30m", NOW) == 5400 * 10**9
    assert NOW - parse_time("2d12h", NOW) == 216_000 * 10**9
    assert NOW - parse_time("90s", NOW) == 90 * 10**9
    assert NOW - parse_time("1.5h", NOW) == 5400 * 10**9
    assert NOW - parse_time("250ms", NOW) == 250_000_000      # ms, not minutes and a stray s
    assert NOW - parse_time("1m30s250ms", NOW) == 90_250_000_000
    assert NOW - parse_time("1w2d", NOW) == 9 * 86400 * 10**9
    assert NOW - parse_time(" 15m ", NOW) == 900 * 10**9
    assert parse_time("now", NOW) == NOW
    assert parse_time("2262-04-11T23:47:16.854775806Z") == MAX_TIME_NS
    assert parse_time("1969-12-31T23:59:59Z") == 0


@pytest.mark.parametrize("text", ["1h30", "1H", "h", "1.h", "30 m", "1d-2h", "-1h", "1hh", "1mo"])
def test_bad_durations(text):
    with pytest.raises(SelectorError) as e:
        parse_time(text, NOW)
    assert str(e.value).startswith(f"bad time expression {text!r}: ") and "\n" not in str(e.value)


def test_compound_duration_through_the_cli(lake, capsys):
    _, config, n = lake
    # the lake's lines are from 2026-11-20/21, so a window ending 1h30m ago holds them all when now is later
    assert count(capsys, config, "--since", "52w1d", "--until", "1h30m") == n
    err = one_sentence(capsys, config, "logs", "--since", "1h30")
    assert err == ("loglake-query: bad time expression '1h30': a duration is numbers each with a unit "
                   "(ms, s, m, h, d, w or y), like 90s, 1h30m or 2d12h\n")


@pytest.mark.parametrize("pattern,hint", [("(?=x)", "RE2 has no look-around"), ("a(?<!b)c", "RE2 has no look-around"),
                                          (r"(a)\1", "RE2 has no backreferences"),
                                          ("a(b", "drop --regex to search the text as is")])
def test_regex_checked_by_re2(lake, capsys, pattern, hint):
    _, config, _ = lake
    for command in ("logs", "tail", "stats"):
        err = one_sentence(capsys, config, command, "--grep", pattern, "--regex")
        assert err.startswith(f"loglake-query: --grep regex {pattern!r} is not valid RE2: ") and err.endswith(
            f"; {hint}\n")


def test_regex_python_would_refuse_but_re2_runs(lake, capsys):
    _, config, _ = lake
    rc, out, err = run(capsys, config, "--format", "json", "logs", "--since", "all", "--grep",
                       r"^node-b app r1 i\pN$", "--regex")  # \pN: Python's re has no Unicode classes
    assert rc == 0, err
    assert sorted(json.loads(line)["body"] for line in out.splitlines()) == [f"node-b app r1 i{i}" for i in range(10)]


def test_trace_ids_as_people_write_them(lake, capsys, tmp_path):
    _, config, _ = lake
    tid = lake_trace(3)
    dashed = "-".join((tid[:8], tid[8:12], tid[12:16], tid[16:20], tid[20:])).upper()
    want = run(capsys, config, "--format", "json", "trace", tid)
    assert want[0] == 0 and want[1]
    assert run(capsys, config, "--format", "json", "trace", dashed) == want
    assert run(capsys, config, "--format", "json", "trace", f" {tid.upper()} ") == want
    for name, spelled in (("plain.zip", tid), ("dashed.zip", dashed)):
        rc, out, err = run(capsys, config, "export", "--trace", spelled, "--out", str(tmp_path / name))
        assert rc == 0 and out.startswith(f"exported {len(want[1].splitlines())} records"), err
    for argv in (("trace", "abc"), ("trace", tid + "0"), ("trace", "g" * 32),
                 ("export", "--trace", "xyz", "--out", str(tmp_path / "never.zip"))):
        err = one_sentence(capsys, config, *argv)
        bad = argv[2] if argv[0] == "export" else argv[1]
        assert err.startswith(f"loglake-query: {bad!r} is not a trace id: give its 32 hex digits")
    assert not (tmp_path / "never.zip").exists()


def test_negative_counts_are_usage_errors(lake, capsys):
    _, config, _ = lake
    for argv in (("logs", "--limit", "-1"), ("tail", "--lines", "-5"), ("logs", "--limit", "many")):
        with pytest.raises(SystemExit) as e:
            q(["--config", str(config), *argv])
        assert e.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
    err = one_sentence(capsys, config, "tail", "-f", "--interval", "0")
    assert err.startswith("loglake-query: --interval 0: give a number of seconds above 0")


def reader_stops_early(config: Path, *argv: str) -> tuple[int, str, str]:
    """Run the real command with its stdout to a pipe whose reader takes one line and leaves, as `| head -1`."""
    proc = subprocess.Popen([QUERY, "--config", str(config), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), first, err


BIG = "SELECT range AS i, repeat('x', 200) AS pad FROM range(100000)"  # some 20 MB: far past a pipe's buffer


@pytest.mark.parametrize("argv", [("--format", "json", "sql", BIG), ("sql", BIG), ("--format", "csv", "sql", BIG),
                                  ("--format", "json", "logs", "--since", "all", "--limit", "0"),
                                  ("logs", "--since", "all", "--limit", "0"),
                                  ("--format", "json", "tail", "--lines", "100000")])
def test_closed_pipe_ends_quietly(lake, capsys, argv):
    _, config, n = lake
    if "logs" in argv or "tail" in argv:  # more than a pipe holds, so the write really meets the closed end
        rc, out, _ = run(capsys, config, *argv)
        assert rc == 0 and len(out.encode()) > 96 * 1024  # Linux pipes hold 64 KiB
    rc, first, err = reader_stops_early(config, *argv)
    assert first and rc == 0 and err == "", err


def test_closed_pipe_in_a_shell(lake):
    _, config, _ = lake
    got = subprocess.run(["bash", "-c", f'"$0" --config "$1" sql "$2" | head -1; exit "${{PIPESTATUS[0]}}"',
                          QUERY, str(config), BIG], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.startswith("i ") and got.stdout.count("\n") == 1
    assert got.stderr == ""
