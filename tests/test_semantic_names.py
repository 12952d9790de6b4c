"""The names people look for: OpenTelemetry / Kubernetes semantic-convention columns in the query view,
restart counts and --previous, Docker's container name and labels, a sidecar's pod from the Downward API,
and lakes written before trace_flags and resource existed. All through the real shipper (--once, spool),
aggregator and loglake-query."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

import duckdb
import orjson
import pytest

from aggregator.cli.run import main as aggregator
from lake import duck
from query.cli import main as query_cli
from shipper import config as shipper_config
from shipper import enrich
from shipper.agent import Agent
from shipper.cli import main as shipper
from shipper.transport import create
from tests.conftest import cri, write_config

UID1 = "0f1e2d3c-0000-4000-8000-000000000001"
UID2 = "0f1e2d3c-0000-4000-8000-000000000002"
CID = "c" * 64
TS = "2026-11-24T10:00:{:02d}.000000000Z"


def ship(config: Path) -> None:
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0


def sql(capsys, config: Path, query: str) -> list[dict]:
    capsys.readouterr()
    assert query_cli(["--config", str(config), "-o", "jsonl", "sql", query]) == 0
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]


def cli_rows(capsys, config: Path, *argv: str) -> list[dict]:
    capsys.readouterr()
    assert query_cli(["--config", str(config), "-o", "jsonl", *argv]) == 0
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]


def pod_file(tmp: Path, pod: str, uid: str, container: str, restart: int, bodies: list[str], second: int = 0) -> Path:
    p = tmp / "logs" / "pods" / f"shop_{pod}_{uid}" / container / f"{restart}.log"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(cri(TS.format(second + i), b) for i, b in enumerate(bodies)))
    return p


# restart counts and --previous ------------------------------------------------------------------------

def test_restart_count_and_previous(tmp_path, capsys):
    pod_file(tmp_path, "web-1", UID1, "app", 0, ["app run0 a", "app run0 b"])
    pod_file(tmp_path, "web-1", UID1, "app", 1, ["app run1 a"], second=10)
    for restart in range(3):
        pod_file(tmp_path, "web-1", UID1, "nginx", restart, [f"nginx run{restart}"], second=20 + restart)
    # the same pod name again, a new pod (uid): its first run has no previous one
    pod_file(tmp_path, "web-1", UID2, "app", 0, ["new pod run0"], second=30)
    config = write_config(tmp_path)
    ship(config)

    got = sql(capsys, config, 'SELECT "k8s.pod.uid" AS uid, "k8s.container.name" AS c, '
                              '"k8s.container.restart_count" AS r, body FROM logs ORDER BY uid, c, r, body')
    assert [(g["uid"][-1], g["c"], g["r"], g["body"]) for g in got] == [
        ("1", "app", 0, "app run0 a"), ("1", "app", 0, "app run0 b"), ("1", "app", 1, "app run1 a"),
        ("1", "nginx", 0, "nginx run0"), ("1", "nginx", 1, "nginx run1"), ("1", "nginx", 2, "nginx run2"),
        ("2", "app", 0, "new pod run0")]
    got = sql(capsys, config, 'SELECT count(*) AS n FROM logs WHERE "k8s.container.restart_count" = 1')
    assert got == [{"n": 2}]

    # kubectl logs --previous: each container's run before its latest (any age: these lines are days old)
    prev = cli_rows(capsys, config, "logs", "--previous")
    assert [(r["container"], r["body"]) for r in prev] == [("app", "app run0 a"), ("app", "app run0 b"),
                                                          ("nginx", "nginx run1")]
    prev = cli_rows(capsys, config, "logs", "-n", "shop", "--pod", "web-1", "--container", "nginx", "-p")
    assert [r["body"] for r in prev] == ["nginx run1"]
    # with --since, the window bounds it as it does any listing
    assert [r["body"] for r in cli_rows(capsys, config, "logs", "--previous", "--since", "2026-11-24T10:00:01Z",
                                        "--container", "app")] == ["app run0 b"]


def test_semantic_names_hold_the_columns(tmp_path, capsys):
    pod_file(tmp_path, "web-1", UID1, "app", 2, ["hello"])
    config = write_config(tmp_path)
    ship(config)
    (r,) = sql(capsys, config, 'SELECT * FROM logs')
    same = {"k8s.namespace.name": "namespace", "k8s.pod.name": "pod", "k8s.pod.uid": "pod_uid",
            "k8s.container.name": "container", "container.id": "container_id", "k8s.node.name": "node",
            "log.iostream": "stream", "log.file.path": "source_path", "log.record.uid": "record_id",
            "timestamp": "time", "observed_timestamp": "observed_time"}
    assert {k: r[k] for k in same} == {k: r[v] for k, v in same.items()}
    assert (r["k8s.namespace.name"], r["k8s.node.name"], r["log.iostream"]) == ("shop", "node-a", "stdout")
    assert (r["k8s.container.restart_count"], r["log.file.name"], r["container.name"], r["service.name"]) == \
        (2, "2.log", None, None)
    assert orjson.loads(r["resource"]) == {"k8s.container.restart_count": 2}
    # a name that is not there is one sentence listing what is, semantic names included
    capsys.readouterr()
    assert query_cli(["--config", str(config), "sql", 'SELECT "k8s.pod.nam" FROM logs']) == 1
    err = capsys.readouterr().err
    assert "unknown column 'k8s.pod.nam'" in err and '"k8s.pod.name"' in err and "trace_flags" in err


# Docker json-file: config.v2.json beside the log ---------------------------------------------------

def docker_log(tmp: Path, cid: str, bodies: list[str], config: object | bytes | None) -> Path:
    d = tmp / "logs" / "docker" / "containers" / cid
    d.mkdir(parents=True, exist_ok=True)
    log = d / f"{cid}-json.log"
    log.write_text("".join(orjson.dumps({"log": b + "\n", "stream": "stdout", "time": TS.format(i)}).decode() + "\n"
                           for i, b in enumerate(bodies)))
    if config is not None:
        (d / "config.v2.json").write_bytes(config if isinstance(config, bytes) else orjson.dumps(config))
    return log


K8S_LABELS = {"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "web-1",
              "io.kubernetes.pod.uid": UID1, "io.kubernetes.container.name": "app",
              "annotation.io.kubernetes.container.restartCount": "3", "team": "payments"}


def test_docker_config_gives_name_labels_and_kubernetes_fields(tmp_path, capsys):
    docker_log(tmp_path, CID, ["from dockershim"], {"ID": CID, "Name": f"/k8s_app_web-1_shop_{UID1}_3",
                                                   "Config": {"Labels": K8S_LABELS, "Image": "shop:1"}})
    docker_log(tmp_path, "d" * 64, ["plain docker"], {"Name": "/redis", "Config": {"Labels": {"tier": "cache"}}})
    config = write_config(tmp_path)
    ship(config)
    got = sql(capsys, config, 'SELECT namespace, pod, pod_uid, container, container_id, "container.name" AS name, '
                              '"k8s.container.restart_count" AS restart, resource, body FROM logs ORDER BY body')
    for g in got:
        g["resource"] = orjson.loads(g["resource"])
    assert got == [
        {"namespace": "shop", "pod": "web-1", "pod_uid": UID1, "container": "app", "container_id": CID,
         "name": f"k8s_app_web-1_shop_{UID1}_3", "restart": 3, "body": "from dockershim",
         "resource": {"k8s.container.restart_count": 3, "container.name": f"k8s_app_web-1_shop_{UID1}_3",
                      **{f"container.label.{k}": v for k, v in K8S_LABELS.items()}}},
        {"namespace": None, "pod": None, "pod_uid": None, "container": None, "container_id": "d" * 64,
         "name": "redis", "restart": None, "body": "plain docker",
         "resource": {"container.name": "redis", "container.label.tier": "cache"}},
    ]
    got = sql(capsys, config, "SELECT resource->>'$.\"container.label.team\"' AS team FROM logs WHERE pod = 'web-1'")
    assert got == [{"team": "payments"}]


def run_agent_once(config: Path) -> str:
    """The shipper's agent over the files once, in this process; its /metrics text after."""
    from prometheus_client import generate_latest

    from shipper.metrics import registry
    settings = shipper_config.load(str(config))

    async def go() -> str:
        transport = create(settings.transport, settings.shipper)
        await transport.start()
        agent = Agent(settings, transport)
        await agent.run(once=True)
        await transport.close()
        return generate_latest(registry(agent)).decode()
    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["malformed", "not an object", "labels not strings", "oversized", "symlink",
                                  "fifo", "directory"])
def test_a_bad_docker_config_is_a_warning_and_a_count_and_the_lines_flow(tmp_path, capsys, caplog, kind):
    good = {"Name": "/web", "Config": {"Labels": K8S_LABELS}}
    bad: object | bytes | None = {
        "malformed": b'{"Name": "/web", "Config": ',
        "not an object": b"[1, 2]",
        "labels not strings": {"Name": "/web", "Config": {"Labels": {"a": 1}}},
        "oversized": orjson.dumps({"Name": "/web", "Config": {"Env": ["X=" + "x" * enrich.DOCKER_CONFIG_MAX_BYTES]}}),
    }.get(kind)
    log = docker_log(tmp_path, CID, ["line 1", "line 2"], bad)
    target = log.parent / "config.v2.json"
    if kind == "symlink":  # a planted link (to a config that would fill in a victim's pod) is not followed
        real = tmp_path / "elsewhere.json"
        real.write_bytes(orjson.dumps(good))
        target.symlink_to(real)
    elif kind == "fifo":  # opening a FIFO for reading would block the shipper forever: it must not
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    config = write_config(tmp_path)
    with caplog.at_level(logging.WARNING, logger="loglake.shipper"):
        text = run_agent_once(config)
    warnings = [r for r in caplog.records if "container config not used" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].path == str(target), caplog.text
    assert 'loglake_shipper_errors_total{kind="docker_config"} 1.0\n' in text
    assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    got = sql(capsys, config, 'SELECT body, namespace, container_id, resource FROM logs ORDER BY body')
    assert got == [{"body": "line 1", "namespace": None, "container_id": CID, "resource": None},
                   {"body": "line 2", "namespace": None, "container_id": CID, "resource": None}]


def test_docker_config_is_read_once_and_again_when_it_changes(tmp_path, monkeypatch):
    log = docker_log(tmp_path, CID, ["x"], {"Name": "/one"})
    reads: list[str] = []
    real = enrich._read_config
    monkeypatch.setattr(enrich, "_read_config", lambda p: reads.append(p) or real(p))
    assert enrich.from_path(str(log), env={}).container_name == "one"
    assert enrich.from_path(str(log), env={}).container_name == "one"
    assert len(reads) == 1
    cfg = log.parent / "config.v2.json"
    cfg.write_bytes(orjson.dumps({"Name": "/two-renamed"}))
    os.utime(cfg, ns=(cfg.stat().st_atime_ns, cfg.stat().st_mtime_ns + 1_000_000_000))
    assert enrich.from_path(str(log), env={}).container_name == "two-renamed" and len(reads) == 2


def test_many_labels_are_cut_with_a_warning(tmp_path, caplog):
    labels = {f"label-{i:04d}": "v" * 100 for i in range(200)}
    log = docker_log(tmp_path, CID, ["x"], {"Name": "/big", "Config": {"Labels": labels}})
    with caplog.at_level(logging.WARNING, logger="loglake.shipper"):
        meta = enrich.from_path(str(log), env={})
    assert 0 < len(meta.labels) < 200 and meta.problem is None and "container labels cut" in caplog.text
    assert [k for k, _ in meta.labels] == sorted(labels)[:len(meta.labels)]
    assert len(orjson.dumps(meta.resource())) <= enrich.LABELS_MAX_BYTES + 64


# A sidecar: the pod from the Downward API ----------------------------------------------------------

SIDECAR = {"LOGLAKE_K8S_NAMESPACE": "billing", "LOGLAKE_K8S_POD": "billing-7f9c-x2x", "LOGLAKE_K8S_POD_UID": UID2,
           "LOGLAKE_K8S_CONTAINER": "app"}


def test_a_sidecars_records_carry_the_pod_from_its_environment(tmp_path, capsys, monkeypatch):
    for k, v in SIDECAR.items():
        monkeypatch.setenv(k, v)
    app_log = tmp_path / "logs" / "app" / "billing.log"   # the app's own file: its path names no pod
    app_log.parent.mkdir(parents=True)
    app_log.write_text("invoice 7 sent\n")
    # a file named like another tenant's kubelet log: a sidecar's files are its own pod's, whatever their names
    pod_file(tmp_path, "web-1", UID1, "nginx", 0, ["from a pods path"])
    config = write_config(tmp_path, shipper={"node_name": "node-7"})
    ship(config)
    got = sql(capsys, config, 'SELECT body, "k8s.namespace.name" AS ns, "k8s.pod.name" AS pod, '
                              '"k8s.pod.uid" AS uid, "k8s.container.name" AS c, "k8s.node.name" AS node '
                              "FROM logs ORDER BY body")
    assert got == [{"body": "from a pods path", "ns": "billing", "pod": "billing-7f9c-x2x", "uid": UID2, "c": "app",
                    "node": "node-7"},
                   {"body": "invoice 7 sent", "ns": "billing", "pod": "billing-7f9c-x2x", "uid": UID2, "c": "app",
                    "node": "node-7"}]


# A lake written before trace_flags and resource existed --------------------------------------------

def strip_new_columns(tmp: Path, config: Path) -> list[str]:
    """Rewrite every stored file as the code before trace_flags and resource wrote it (same key, same
    path): a lake of that time. Returns the catalog paths."""
    from query.connect import Lake
    lake = Lake(str(config))
    con = duck.connect()
    keys = duck.KeyRegistry(con)
    paths = []
    for f in lake.catalog.files():
        where = lake.storage.location(f.tier, f.path)
        enc = f"encryption_config={{footer_key: '{keys.add(lake.keyring.get(f.key_id))}'}}"
        con.execute(f"COPY (SELECT * EXCLUDE (trace_flags, resource) FROM read_parquet('{where}', {enc})) "
                    f"TO '{where}.old' (FORMAT parquet, ENCRYPTION_CONFIG {{footer_key: '{f.key_id}'}})")
        os.replace(f"{where}.old", where)
        assert "resource" not in {n for n, *_ in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{where}', {enc})").fetchall()}
        paths.append(f.path)
    lake.close()
    return paths


def test_a_lake_written_before_the_new_columns_still_queries(tmp_path, capsys):
    pod_file(tmp_path, "web-1", UID1, "app", 0, ["old 1", "old 2"])
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 10**9})
    ship(config)
    (old,) = strip_new_columns(tmp_path, config)
    pod_file(tmp_path, "web-1", UID1, "app", 1, ['{"msg":"new","traceparent":"00-' + "a" * 32 + "-" + "b" * 16
                                                 + '-01"}'], second=5)
    ship(config)  # a second hot file, of the same day and key, with the new columns
    q = ('SELECT body, trace_flags, "k8s.container.restart_count" AS r, resource IS NOT NULL AS res '
         "FROM logs ORDER BY body")
    want = [{"body": "new", "trace_flags": 1, "r": 1, "res": True},
            {"body": "old 1", "trace_flags": None, "r": None, "res": False},
            {"body": "old 2", "trace_flags": None, "r": None, "res": False}]
    assert sql(capsys, config, q) == want
    assert [r["body"] for r in cli_rows(capsys, config, "logs", "--since", "all")] == ["old 1", "old 2", "new"]
    assert [r["body"] for r in cli_rows(capsys, config, "trace", "a" * 32)] == ["new"]

    # the old file read after a new one (its entry newer: an aggregator not yet upgraded wrote it last)
    from query.connect import Lake
    lake = Lake(str(config))
    files = [dataclasses.replace(f, created_at=f.created_at + 10**12) if f.path == old else f
             for f in lake.catalog.files()]
    assert sorted(files, key=lambda f: f.created_at)[-1].path == old
    table = lake.query(files, q, what={"command": "test"})
    assert table.to_pylist() == want and lake._probe
    lake.close()

    # compaction brings the old records up to the current schema
    assert aggregator(["--config", str(config), "compact"]) == 0
    lake = Lake(str(config))
    (warm,) = lake.catalog.files()
    assert warm.tier == "warm"
    con = duck.connect()
    enc = f"encryption_config={{footer_key: '{duck.KeyRegistry(con).add(lake.keyring.get(warm.key_id))}'}}"
    columns = [n for n, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet("
                                          f"'{lake.storage.location(warm.tier, warm.path)}', {enc})").fetchall()]
    lake.close()
    assert columns == list(duck.COLUMNS)
    assert sql(capsys, config, q) == want


def test_a_file_missing_the_first_columns_is_not_read_as_nulls(tmp_path):
    con = duck.connect()
    (tmp_path / "hot").mkdir()
    from lake.keys import DataKey
    from runtime.errors import StorageError
    key = DataKey("dk_test", bytes(32))
    con.execute(f"COPY (SELECT 1 AS x) TO '{tmp_path}/hot/y.parquet' (FORMAT parquet, "
                f"ENCRYPTION_CONFIG {{footer_key: '{duck.KeyRegistry(con).add(key)}'}})")
    with pytest.raises(StorageError, match="is not a loglake file: it lacks the columns"):
        duck.scan_sql(duck.KeyRegistry(con), {key: [f"{tmp_path}/hot/y.parquet"]})
    with pytest.raises(duckdb.Error):
        con.execute(duck.scan_sql(duck.KeyRegistry(con), {key: [f"{tmp_path}/hot/y.parquet"]}, probe=False))
