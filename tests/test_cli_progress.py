"""Long jobs show progress on a terminal and stay quiet and machine-readable otherwise; shell completion.

Every command runs as its own process: once with stderr on a pseudo-terminal (a person watching), once
with pipes (a script), where stderr must stay empty and ``--format json`` / ``-o json`` prints one object.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import orjson
import pytest

from aggregator import config as agg_config
from lake.catalog.base import open_catalog
from tests.conftest import fill_lake, write_config

RECORDS_PER_NAMESPACE_SHARE = 2  # fill_lake writes as many "pay" records as "shop" ones
ENV = {**{k: v for k, v in os.environ.items() if k != "LOGLAKE_CONFIG"}, "COLUMNS": "160"}


def lake(tmp_path):
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 10**9})
    return config, fill_lake(tmp_path, config, rounds=2, lines=20)


def listed(config, tier: str | None = None) -> list:
    """The catalog's files (of ``tier``)."""
    catalog = open_catalog(agg_config.load(str(config)).aggregator)
    try:
        return catalog.files(tier) if tier else catalog.files()
    finally:
        catalog.close()


def command(tool: str, config, *argv: str) -> list[str]:
    return [sys.executable, "-m", f"{tool}.cli", "--config", str(config), *argv]


def on_terminal(argv: list[str], rows: int = 40, columns: int = 120) -> tuple[int, str, str]:
    """(exit code, stdout, what reached the terminal on stderr); 0 × 0 is a terminal that reports no size."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, env=ENV)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    out = proc.stdout.read().decode()
    return proc.wait(timeout=120), out, seen.decode(errors="replace")


def piped(argv: list[str]) -> tuple[int, str, str]:
    p = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
    return p.returncode, p.stdout, p.stderr


def bar(text: str, desc: str) -> str:
    """The last state tqdm drew of the bar named ``desc``."""
    states = [s for s in re.split(r"[\r\n]", text) if s.startswith(desc)]
    assert states, f"no progress bar {desc!r} in {text!r}"
    return states[-1]


def test_long_jobs_draw_files_bytes_rate_and_eta_on_a_terminal(tmp_path):
    config, _ = lake(tmp_path)
    hot = listed(config, "hot")

    rc, out, err = on_terminal(command("aggregator", config, "compact"))
    assert rc == 0 and out.startswith(f"compacted {len(hot)} files")
    done = bar(err, "compact hot → warm")
    assert "100%" in done and f"{len(hot)}/{len(hot)} files" in done   # files done of total
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+[kMG]?B/s", done), done   # elapsed<ETA, rate in bytes

    rc, out, err = on_terminal(command("aggregator", config, "verify"))
    assert rc == 0 and "verify: OK" in out
    assert re.search(r"\d+/\d+ files", bar(err, "verify: files"))
    assert "2/2" in bar(err, "verify: completeness, duplicates")

    rc, out, err = on_terminal(command("aggregator", config, "erase", "-n", "pay", "--reason", "REQ-1"), 0, 0)
    assert rc == 0 and "records deleted" in out
    assert "100%" in bar(err, "erasure: scan") and "100%" in bar(err, "erasure")

    rc, out, err = on_terminal(command("query", config, "export", "--since", "all", "--out",
                                       str(tmp_path / "case.zip")), 0, 0)
    assert rc == 0 and out.startswith("exported ")
    assert "2/2" in bar(err, "export: ")

    # --no-progress: a person who does not want the bar
    rc, out, err = on_terminal(command("aggregator", config, "verify", "--no-progress"))
    assert rc == 0 and "verify: OK" in out and err == ""


def test_off_a_terminal_only_a_json_summary_comes_out(tmp_path):
    config, n = lake(tmp_path)
    cfg = agg_config.load(str(config)).aggregator
    hot = listed(config, "hot")

    def run(*argv: str, tool: str = "aggregator", rc: int = 0) -> dict:
        code, out, err = piped(command(tool, config, *argv))
        assert (code, err) == (rc, ""), err     # no bar, no log line: a script reads stdout alone
        assert len(out.splitlines()) == 1
        return orjson.loads(out)

    doc = run("compact", "--format", "json")
    assert doc["files_in"] == len(hot) and doc["rows"] == n and doc["by_tier"] == {"warm": doc["files_out"]}

    doc = run("verify", "--format", "json")
    assert doc["ok"] is True and doc["missing_bytes"] == 0 and doc["duplicated"] == 0
    assert doc["files_checked"] == len(listed(config)) > 0 and doc["file_problems"] == []

    doc = run("retention", "--dry-run", "--format", "json")
    assert doc["dry_run"] is True and doc["result"] is None and doc["plan"]["what"] == "retention"

    doc = run("erase", "-n", "pay", "--reason", "REQ-2", "--format", "json")
    assert doc["result"]["rows_deleted"] == n // RECORDS_PER_NAMESPACE_SHARE
    assert doc["plan"]["by_reason"]["erasure"]["rows"] == n // RECORDS_PER_NAMESPACE_SHARE

    doc = run("report", "--out", str(tmp_path / "report.md"), "--format", "json")
    assert doc["verify_ok"] is True and (tmp_path / "report.json").exists()

    doc = run("export", "--since", "all", "--out", str(tmp_path / "case.zip"), "-o", "json", tool="query")
    assert doc["records"] == n - n // RECORDS_PER_NAMESPACE_SHARE and doc["archive"].endswith("case.zip")
    doc = run("verify-export", str(tmp_path / "case.zip"), "-o", "json", tool="query")
    assert doc["intact"] is True and doc["records"] == n - n // RECORDS_PER_NAMESPACE_SHARE

    # the JSON summary must fail when the lake is wrong, not only look right when it is
    victim = listed(config)[0]
    path = cfg.data_dir / victim.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    doc = run("verify", "--format", "json", rc=1)
    assert doc["ok"] is False and any(victim.path in p and p.startswith("altered") for p in doc["file_problems"])


def complete(tool: str, *words: str) -> list[str]:
    """What bash offers after ``words`` with the script ``tool`` prints (the last word is being typed)."""
    make = (f"{sys.executable} -m {tool}.cli --print-completion bash" if tool == "shipper" else
            f"{sys.executable} -m {tool}.cli completion bash")
    fn = f"_shtab_loglake_{tool}"
    line = " ".join([f"loglake-{tool}", *words])
    script = (f'source <({make}); COMP_WORDS=(loglake-{tool} {" ".join(repr(w) for w in words)}); '
              f'COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; '
              f'{fn}; printf "%s\\n" "${{COMPREPLY[@]}}"')
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


@pytest.mark.parametrize(("tool", "words", "offered"), [
    ("query", ("",), {"logs", "trace", "tail", "stats", "sql", "export", "verify-export", "serve", "token",
                      "completion"}),
    ("query", ("logs", "-o", ""), {"table", "wide", "json", "jsonl", "csv"}),
    ("query", ("logs", "--li"), {"--limit"}),
    ("aggregator", ("",), {"run", "certs", "compact", "verify", "retention", "erase", "hold", "report", "topics",
                           "keys", "completion"}),
    ("aggregator", ("verify", "--format", ""), {"text", "json"}),
    ("shipper", ("--onc",), {"--once"}),
])
def test_bash_completion_offers_subcommands_options_and_choices(tool, words, offered):
    assert set(complete(tool, *words)) == offered


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_completion_scripts_for_other_shells(shell):
    p = subprocess.run([sys.executable, "-m", "query.cli", "completion", shell], capture_output=True, text=True,
                       env=ENV, timeout=60)
    assert p.returncode == 0 and "verify-export" in p.stdout and p.stderr == ""
