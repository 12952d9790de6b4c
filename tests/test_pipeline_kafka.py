"""The whole path through the real Kafka broker over mutual TLS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from aggregator import certs
from aggregator.cli.run import main as aggregator
from lake.catalog.sqlite import SqliteCatalog as Catalog
from shipper.cli import main as shipper
from tests.conftest import stored_rows, write_config, write_sample_logs

pytestmark = pytest.mark.kafka


def create_topic(config: Path) -> None:
    assert aggregator(["--config", str(config), "topics", "create"]) == 0


def test_records_arrive_exactly_over_mutual_tls(tmp_path, broker, capsys):
    expected = write_sample_logs(tmp_path)
    config = write_config(tmp_path, broker=broker)
    create_topic(config)
    assert "created with 2 partitions" in capsys.readouterr().out
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert stored_rows(config) == expected
    # one container's lines share a key, so a file holds them in offset order
    entries = Catalog(tmp_path / "lake" / "catalog.sqlite").files()
    assert sum(e.rows for e in entries) == 5
    assert {e.topic for e in entries} == {config.read_text().split('topic = "')[1].split('"')[0]}


def test_restart_resumes_after_stored_position(tmp_path, broker):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path, broker=broker)
    create_topic(config)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0  # consumes nothing twice
    assert len(stored_rows(config)) == 5
    shutil.rmtree(tmp_path / "shipper")                          # the shipper resends everything…
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0  # …and the aggregator drops it by id
    assert len(stored_rows(config)) == 5


def _foreign_client(tmp: Path) -> Path:
    """A client certificate signed by a CA the broker does not trust."""
    ca_cert, ca_key = certs.make_ca("rogue CA")
    cert, key = certs.issue(ca_cert, ca_key, "shipper", server=False)
    out = tmp / "rogue"
    out.mkdir()
    certs._save_leaf(out, "shipper", cert, key, ca_cert)
    return out


@pytest.mark.parametrize("identity", ["none", "foreign"])
def test_client_without_valid_certificate_is_refused(tmp_path, broker, capsys, identity):
    write_sample_logs(tmp_path)
    good = write_config(tmp_path, broker=broker)
    create_topic(good)
    topic = good.read_text().split('topic = "')[1].split('"')[0]
    if identity == "none":
        config = write_config(tmp_path, broker=broker, topic=topic, shipper_cert=None)
    else:
        rogue = _foreign_client(tmp_path)
        config = write_config(tmp_path, broker=broker, topic=topic, shipper_cert="shipper")
        text = config.read_text().replace(str(broker.certs / "shipper.crt"), str(rogue / "shipper.crt"))
        config.write_text(text.replace(str(broker.certs / "shipper.key"), str(rogue / "shipper.key")))
    capsys.readouterr()
    assert shipper(["--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert "loglake-shipper: cannot connect to Kafka at" in err and "Traceback" not in err
    # nothing reached the broker, so nothing reaches storage
    assert aggregator(["--config", str(good), "--once"]) == 0
    assert stored_rows(good) == []
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_aggregator_without_certificate_is_refused(tmp_path, broker, capsys):
    config = write_config(tmp_path, broker=broker, aggregator_cert=None)
    capsys.readouterr()
    assert aggregator(["--config", str(config), "--once"]) == 1
    assert "cannot reach Kafka" in capsys.readouterr().err


SASL_BOOTSTRAP = os.environ.get("LOGLAKE_TEST_SASL_BOOTSTRAP", "127.0.0.1:19095")


@pytest.mark.parametrize("password_ok", [True, False])
def test_shipper_over_sasl_scram(tmp_path, broker, capsys, monkeypatch, password_ok):
    """SASL_SSL with SCRAM-SHA-512 instead of a client certificate (settings from the environment)."""
    expected = write_sample_logs(tmp_path)
    config = write_config(tmp_path, broker=broker, shipper_cert=None)
    create_topic(config)
    password = (broker.certs / "scram-shipper.password").read_text().strip()
    with monkeypatch.context() as env:
        env.setenv("LOGLAKE_KAFKA_BOOTSTRAP_SERVERS", SASL_BOOTSTRAP)
        env.setenv("LOGLAKE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        env.setenv("LOGLAKE_KAFKA_SASL_USERNAME", "shipper")
        env.setenv("LOGLAKE_KAFKA_SASL_PASSWORD", password if password_ok else "wrong-" + password)
        capsys.readouterr()
        assert shipper(["--config", str(config), "--once"]) == (0 if password_ok else 1)
    if not password_ok:
        err = capsys.readouterr().err
        assert "loglake-shipper: cannot connect to Kafka at 127.0.0.1:19095" in err and password not in err
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert stored_rows(config) == (expected if password_ok else [])
