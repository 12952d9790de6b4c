"""Secrets stay secret: an inline master key in a world-readable config, a KMS hook's token in errors."""

from __future__ import annotations

import base64
import os
import sys

from aggregator.cli.run import main as aggregator
from query.cli import main as q
from shipper.cli import main as shipper
from tests.conftest import write_config, write_sample_logs


def test_an_inline_master_key_in_a_world_readable_config_is_refused(tmp_path, capsys):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    raw = base64.b64encode(os.urandom(32)).decode()
    config.write_text(config.read_text().replace("[aggregator]\n", f'[aggregator]\nmaster_key = "{raw}"\n'))
    config.chmod(0o644)
    assert shipper(["--config", str(config), "--once"]) == 0
    capsys.readouterr()
    for run in (lambda: aggregator(["--config", str(config), "--once"]),
                lambda: q(["--config", str(config), "sql", "SELECT 1"])):
        assert run() == 1
        err = capsys.readouterr().err
        assert f"holds [aggregator] master_key but is readable by group or others (mode 644); run 'chmod 600" in err
        assert raw not in err and "Traceback" not in err
    assert not (tmp_path / "lake" / "catalog.sqlite").exists()   # nothing was written under that key
    config.chmod(0o600)
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert q(["--config", str(config), "sql", "SELECT count(*) FROM logs"]) == 0
    assert "5" in capsys.readouterr().out


def test_a_failing_master_key_command_does_not_echo_its_arguments(tmp_path, capsys, monkeypatch):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    hook = tmp_path / "kms.py"
    hook.write_text("import sys\nprint('denied for ' + sys.argv[1], file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setenv("LOGLAKE_AGGREGATOR_MASTER_KEY_COMMAND", f"{sys.executable} {hook} --token=SUPERSECRET")
    assert aggregator(["--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert "master_key_command (python" in err and "failed with exit status 3" in err
    assert "SUPERSECRET" not in err and "Traceback" not in err
    # one that prints a wrong key: still only the program is named
    hook.write_text("print('not-a-key')\n")
    assert aggregator(["--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert "is not a base64 32-byte key" in err and "SUPERSECRET" not in err


def test_a_kms_command_line_in_a_readable_config_is_refused_and_bad_values_are_not_echoed(tmp_path, capsys):
    """Found by the attacker's review: a token-bearing master_key_command in a 0644 file was accepted, and a
    value of the wrong type was printed back."""
    config = write_config(tmp_path)
    base = config.read_text()
    config.write_text(base.replace("[aggregator]\n", '[aggregator]\nmaster_key_command = "kms --token=SUPERSECRET"\n'))
    config.chmod(0o644)
    assert aggregator(["--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert "holds [aggregator] master_key_command but is readable by group or others" in err
    assert "SUPERSECRET" not in err
    config.write_text(base.replace("[aggregator]\n", '[aggregator]\nmaster_key_command = ["kms", "--token=SUPERSECRET"]\n'))
    config.chmod(0o600)
    assert aggregator(["--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert "master_key_command has an invalid value (not shown: it may be a secret)" in err and "SUPERSECRET" not in err
