"""kubectl/logcli habits: -o selects the format, --output-file writes a file, --version everywhere,
a config found from LOGLAKE_CONFIG or the search path, and table cells cut visibly."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pyarrow.parquet as pq
import pytest

from query.cli import main as q
from tests.conftest import module_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return module_lake(tmp_path_factory, "conventions", rounds=1, lines=5)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = q(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_o_json_prints_json_lines_and_writes_no_file(lake, capsys, tmp_path, monkeypatch, fmt):
    _, config, n = lake
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, "--config", str(config), "logs", "--since", "all", "-o", fmt)
    assert rc == 0 and len([orjson.loads(line) for line in out.splitlines()]) == n
    assert not (tmp_path / fmt).exists()   # it once wrote a Parquet file named "json"


def test_output_file_writes_parquet_and_refuses_a_bare_format_word(lake, capsys, tmp_path):
    _, config, n = lake
    rc, _, err = run(capsys, "--config", str(config), "logs", "--since", "all", "--output-file", str(tmp_path / "r.parquet"))
    assert rc == 0 and pq.read_table(tmp_path / "r.parquet").num_rows == n
    with pytest.raises(SystemExit) as e:
        q(["--config", str(config), "logs", "--since", "all", "--output-file", "json"])
    assert e.value.code == 2 and "'json' is an output format: choose it with -o json" in capsys.readouterr().err


def test_table_marks_a_cut_cell_and_wide_shows_it_whole(lake, capsys):
    _, config, _ = lake
    long = "x" * 300
    rc, out, _ = run(capsys, "--config", str(config), "sql", f"SELECT '{long}' AS body")
    assert rc == 0 and "x" * 119 + "…" in out and long not in out
    rc, out, _ = run(capsys, "--config", str(config), "-o", "wide", "sql", f"SELECT '{long}' AS body")
    assert rc == 0 and long in out


def test_the_config_comes_from_loglake_config_or_the_search_path(lake, capsys, tmp_path, monkeypatch):
    _, config, n = lake
    monkeypatch.setenv("LOGLAKE_CONFIG", str(config))
    rc, out, _ = run(capsys, "sql", "SELECT count(*) AS n FROM logs")
    assert rc == 0 and f"\n{n}" in out
    monkeypatch.delenv("LOGLAKE_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loglake.toml").write_text(config.read_text())
    rc, out, _ = run(capsys, "sql", "SELECT count(*) AS n FROM logs")
    assert rc == 0 and f"\n{n}" in out
    monkeypatch.setenv("LOGLAKE_CONFIG", str(tmp_path / "missing.toml"))
    rc, _, err = run(capsys, "sql", "SELECT 1")
    assert rc == 1 and "missing.toml does not exist" in err


@pytest.mark.parametrize("binary", ["loglake-query", "loglake-aggregator", "loglake-shipper"])
def test_version_on_every_binary(binary):
    from importlib.metadata import version
    done = subprocess.run([str(__import__("pathlib").Path(sys.executable).parent / binary), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"{binary} {version('loglake')}"


@pytest.mark.parametrize("command", ["sql", "trace", "logs", "tail", "stats", "export", "verify-export"])
def test_every_subcommand_help_has_examples(capsys, command):
    with pytest.raises(SystemExit) as e:
        q([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:\n  loglake-query " in out
