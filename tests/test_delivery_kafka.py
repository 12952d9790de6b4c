"""Delivery to the real TLS broker: per-container order, and a broker outage mid-stream."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aggregator.cli.run import main as aggregator
from lake.catalog.sqlite import SqliteCatalog as Catalog
from shipper.cli import main as shipper
from tests.conftest import cri, pod_log, write_config

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
OUTAGE_S = float(os.environ.get("LOGLAKE_TEST_OUTAGE_S", "60"))


def kafka_sh(action: str, broker) -> None:
    env = dict(os.environ, LOGLAKE_CERTS=str(broker.certs), PYTHON=sys.executable)
    subprocess.run([str(ROOT / "deploy" / "kafka" / "kafka.sh"), action], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def test_one_containers_lines_stay_in_one_partition_in_order(tmp_path, broker):
    config = write_config(tmp_path, broker=broker, shipper={"batch_max_bytes": 4096},
                          aggregator={"flush_max_records": 100})
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    for j in range(4):
        pod_log(tmp_path, "shop", f"web-{j}", "nginx").write_text(
            "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", f"c{j} line {i} " + "x" * 80) for i in range(300)))
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    con = query.connect(str(config))
    assert con.execute("SELECT pod, count(*) FROM logs GROUP BY pod ORDER BY pod").fetchall() == \
        [(f"web-{j}", 300) for j in range(4)]
    entries = sorted(Catalog(tmp_path / "lake" / "catalog.sqlite").files(), key=lambda e: e.first_offset)
    for j in range(4):
        pod = f"web-{j}"
        mine = [e for e in entries if any(c.split("/")[1] == pod for c in e.containers)]
        assert len({e.partition for e in mine}) == 1          # one container, one partition
        assert len(mine) > 1
        previous_max = -1
        for e in mine:                                         # in Kafka offset order...
            lo, hi = con.execute(
                f"SELECT min(source_offset), max(source_offset) FROM read_parquet('{tmp_path / 'lake' / e.path}', "
                f"encryption_config={{footer_key: '{e.key_id}'}}) WHERE pod = '{pod}'").fetchone()
            assert lo > previous_max                           # ...the file's lines come in file order
            previous_max = hi


def write_lines(path: Path, stop: threading.Event, written: list[int]) -> None:
    i = 0
    while not stop.is_set():
        with path.open("a") as f:
            f.write(cri("2026-11-24T10:00:00Z", f"line {i}"))
        written.append(i)
        i += 1
        time.sleep(0.01)


def test_broker_outage_mid_stream_loses_nothing(tmp_path, broker):
    config = write_config(tmp_path, broker=broker,
                          shipper={"poll_interval_ms": 50, "ack_timeout_ms": 3000, "shutdown_grace_ms": 20000},
                          kafka={"request_timeout_ms": 3000})
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text(cri("2026-11-24T10:00:00Z", "start"))
    stderr = (tmp_path / "shipper.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(config), "--log-level", "INFO"],
                            stdout=subprocess.DEVNULL, stderr=stderr)
    stop, written = threading.Event(), []
    writer = threading.Thread(target=write_lines, args=(log, stop, written))
    writer.start()
    try:
        time.sleep(3)
        kafka_sh("down", broker)
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, "the shipper must keep running while the broker is down"
        buffered = list((tmp_path / "shipper" / "buffer").glob("*.buf"))
        assert buffered, "batches must wait in the disk buffer during the outage"
        kafka_sh("up", broker)
        time.sleep(3)
    finally:
        stop.set()
        writer.join()
        if proc.poll() is None and not _broker_up(broker):
            kafka_sh("up", broker)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    logs = (tmp_path / "shipper.log").read_text()
    assert "buffering batches on disk" in logs and "disk buffer drained" in logs
    assert not list((tmp_path / "shipper" / "buffer").glob("*.buf"))
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    bodies = {b for (b,) in query.connect(str(config)).execute("SELECT DISTINCT body FROM logs").fetchall()}
    assert bodies == {"start"} | {f"line {i}" for i in written}


def _broker_up(broker) -> bool:
    import asyncio

    from aggregator.source.kafka import ping
    from runtime.transport import KafkaSettings
    try:
        asyncio.run(ping(KafkaSettings(bootstrap_servers=broker.bootstrap, ca_file=broker.certs / "ca.crt",
                                       request_timeout_ms=3000),
                         broker.certs / "aggregator.crt", broker.certs / "aggregator.key"))
        return True
    except Exception:
        return False


def test_a_batch_too_large_for_the_topic_is_set_aside_and_stored_later_from_there(tmp_path, broker, capsys):
    """The topic takes at most 3,000 bytes a message: the container whose batch is larger is set aside in
    refused/ (never retried, not blocking the other container), verify reports its lines missing, and an
    aggregator pointed at refused/ as a spool stores them: each line once."""
    import secrets

    spool_text = write_config(tmp_path).read_text()   # (every write_config writes tmp_path/loglake.toml)
    small_topic = write_config(tmp_path, broker=broker, kafka={"max_message_bytes": 3000})
    assert aggregator(["--config", str(small_topic), "topics", "create"]) == 0
    topic = small_topic.read_text().split('topic = "')[1].split('"')[0]
    config = write_config(tmp_path, broker=broker, topic=topic)
    noisy = [secrets.token_hex(50) for _ in range(300)]   # incompressible: a batch of ~15 KB after zstd
    pod_log(tmp_path, "shop", "noisy-1", "app").write_text(
        "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", line) for i, line in enumerate(noisy)))
    pod_log(tmp_path, "shop", "quiet-1", "app").write_text(
        "".join(cri(f"2026-11-24T10:00:01.{i:09d}Z", f"quiet {i}") for i in range(3)))
    capsys.readouterr()
    assert shipper(["--config", str(config), "--once", "--log-level", "ERROR"]) == 0
    err = capsys.readouterr().err
    assert "batch refused for good and set aside" in err and "Traceback" not in err
    refused = sorted((tmp_path / "shipper" / "refused" / "node-a").glob("*.batch"))
    assert refused and not list((tmp_path / "shipper" / "buffer").glob("*.buf"))
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    bodies = lambda: sorted(b for (b,) in query.connect(str(config)).execute("SELECT body FROM logs").fetchall())
    assert bodies() == ["quiet 0", "quiet 1", "quiet 2"]
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 1        # the set-aside lines are missing
    assert "missing" in capsys.readouterr().out
    # the cause fixed or not, refused/ is a spool: an aggregator reading it stores what was set aside
    recover = tmp_path / "recover.toml"
    recover.write_text(spool_text.replace(str(tmp_path / "spool"), str(tmp_path / "shipper" / "refused")))
    assert aggregator(["--config", str(recover), "--once"]) == 0
    assert bodies() == sorted(["quiet 0", "quiet 1", "quiet 2", *noisy])
    assert aggregator(["--config", str(config), "verify"]) == 0


# A principal the broker denies: the dev broker runs KRaft's StandardAuthorizer with
# allow.everyone.if.no.acl.found (deploy/kafka/server.properties.in), so a resource without ACLs is open
# to everyone, and the tests put ACLs on their own topic (and group) only, removing them at the end.

DENIED = "User:CN=denied,O=loglake dev"


def denied_client(tmp: Path, broker) -> Path:
    """A client certificate for the principal DENIED, signed by the broker's dev CA: the directory holding
    denied.crt and denied.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from aggregator import certs
    ca_cert = x509.load_pem_x509_certificate((broker.certs / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((broker.certs / "ca.key").read_bytes(), password=None)
    cert, key = certs.issue(ca_cert, ca_key, "denied", server=False)
    # the TLS principal is the subject as Java prints it (RFC 2253), what the ACL must name
    assert "User:" + cert.subject.rfc4514_string() == DENIED
    out = tmp / "denied-certs"
    out.mkdir()
    certs._save_leaf(out, "denied", cert, key, ca_cert)
    return out


def with_client(config: Path, broker, role: str, certs_dir: Path, name: str, out: Path) -> Path:
    """A copy of ``config`` at ``out`` whose ``role`` (shipper, aggregator) uses certificate ``name``."""
    text = config.read_text()
    for ext in ("crt", "key"):
        text = text.replace(str(broker.certs / f"{role}.{ext}"), str(certs_dir / f"{name}.{ext}"))
    out.write_text(text)
    return out


def kafka_acl(broker, *args: str) -> str:
    env = dict(os.environ, LOGLAKE_CERTS=str(broker.certs), PYTHON=sys.executable)
    done = subprocess.run([str(ROOT / "deploy" / "kafka" / "kafka.sh"), "acl", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kafka.sh acl {' '.join(args)}: {done.stderr}"
    return done.stdout


@contextlib.contextmanager
def denied_on(broker, *resources: str):
    """DENIED may do nothing on ``resources`` (AclCommand options: --topic T, --group G). A resource with
    an ACL is closed to every principal no ACL there allows, so User:* is allowed on them too: everyone
    else keeps the access they had. Removed again at the end, whatever happens."""
    spec = ["--allow-principal", "User:*", "--deny-principal", DENIED, "--operation", "All", *resources]
    try:
        kafka_acl(broker, "--add", *spec)
        # the broker's own authorizer answers --list: once it shows the ACLs, they are in force
        listed = kafka_acl(broker, "--list", *resources)
        assert listed.count("permissionType=DENY") == len(resources) // 2, listed
        yield
    finally:
        kafka_acl(broker, "--remove", "--force", *spec)
    listed = kafka_acl(broker, "--list", *resources)
    assert "permissionType" not in listed, listed


def topic_of(config: Path) -> str:
    return config.read_text().split('topic = "')[1].split('"')[0]


def group_of(config: Path) -> str:
    return config.read_text().split('group_id = "')[1].split('"')[0]


def run_cli(module: str, config: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """``python -m module --config config --once`` as its own process, which must end within ``timeout``."""
    try:
        return subprocess.run([sys.executable, "-m", module, "--config", str(config), "--once"],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{module} --once denied access did not end within {timeout:g} s; its log:\n{err[-3000:]}")


def one_sentence(done: subprocess.CompletedProcess, prog: str) -> str:
    """The one sentence ``prog`` ends with on stderr (exit status 1, no traceback)."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    sentences = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: ")]
    assert len(sentences) == 1, done.stderr[-3000:]
    return sentences[0]


def bodies(config: Path) -> list[tuple[str, int]]:
    import query
    return query.connect(str(config)).execute(
        "SELECT body, count(*) FROM logs GROUP BY body ORDER BY body").fetchall()


@pytest.mark.parametrize("lines", [pytest.param(5, id="denied-at-the-last-flush"),
                                   pytest.param(400, id="denied-while-reading")])
def test_a_denied_shipper_stops_with_one_sentence_and_delivers_once_access_is_granted(tmp_path, broker, lines):
    """DENIED may not use the topic: the shipper stops (exit 1, one sentence) with its batches in the disk
    buffer; once the ACL is gone the same shipper delivers every line, each once. With 5 lines the only
    batch goes out when --once flushes at its end; with 400 (batches of 4 KB) while it is still reading."""
    certs_dir = denied_client(tmp_path, broker)
    config = write_config(tmp_path, broker=broker, shipper={"batch_max_bytes": 4096})
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    denied = with_client(config, broker, "shipper", certs_dir, "denied", tmp_path / "denied.toml")
    expected = []
    for j in range(2):
        text = [f"c{j} line {i} " + "x" * 60 for i in range(lines)]
        pod_log(tmp_path, "shop", f"web-{j}", "nginx").write_text(
            "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", t) for i, t in enumerate(text)))
        expected += text
    with denied_on(broker, "--topic", topic_of(config)):
        done = run_cli("shipper.cli", denied)
        sentence = one_sentence(done, "loglake-shipper")
        assert "Kafka denies access to topic" in sentence and "TopicAuthorizationFailed" in sentence
        assert "ACLs" in sentence
        assert list((tmp_path / "shipper" / "buffer").glob("*.buf")), "its batches wait in the disk buffer"
        assert aggregator(["--config", str(config), "--once"]) == 0   # everyone else may read the topic...
        assert bodies(config) == []                                    # ...and nothing got there
    done = run_cli("shipper.cli", denied)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((tmp_path / "shipper" / "buffer").glob("*.buf"))
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert bodies(config) == sorted((t, 1) for t in expected)


@pytest.mark.parametrize("denied_group", [pytest.param(False, id="topic"), pytest.param(True, id="topic-and-group")])
def test_a_denied_aggregator_stops_with_one_sentence(tmp_path, broker, denied_group):
    """DENIED may not read the topic (nor use its consumer group): the aggregator stops (exit 1, one
    sentence) and stores nothing; once the ACLs are gone the same aggregator stores every line once."""
    certs_dir = denied_client(tmp_path, broker)
    config = write_config(tmp_path, broker=broker)
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    text = [f"line {i}" for i in range(20)]
    pod_log(tmp_path, "shop", "web-1", "nginx").write_text(
        "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", t) for i, t in enumerate(text)))
    assert shipper(["--config", str(config), "--once"]) == 0
    denied = with_client(config, broker, "aggregator", certs_dir, "denied", tmp_path / "denied.toml")
    resources = ["--topic", topic_of(config)] + (["--group", group_of(config)] if denied_group else [])
    with denied_on(broker, *resources):
        done = run_cli("aggregator.cli.run", denied)
        sentence = one_sentence(done, "loglake-aggregator")
        assert "Kafka denies access to topic" in sentence and "ACLs" in sentence
        assert ("GroupAuthorizationFailed" if denied_group else "TopicAuthorizationFailed") in sentence
        assert not Catalog(tmp_path / "lake" / "catalog.sqlite").files()
    done = run_cli("aggregator.cli.run", denied)
    assert done.returncode == 0, done.stderr[-3000:]
    assert bodies(config) == sorted((t, 1) for t in text)
