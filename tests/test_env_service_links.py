"""Kubernetes service links: kubelet gives every pod variables for every Service of its namespace, so a
Service named loglake-shipper puts LOGLAKE_SHIPPER_PORT=tcp://10.0.0.1:2020 (and more) into the shipper's
environment, which look like [shipper] overrides. They are not settings and must not stop a component,
while a misspelt setting still must."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML, installed with the test extras (moto[server] pulls it in through responses)

from aggregator import config as aggregator_config
from aggregator.config import RetentionConfig, RetentionRule
from lake.config import AggregatorConfig, TiersConfig
from query import config as query_config
from query.config import QueryConfig
from runtime import config as config_file
from runtime.errors import ConfigError
from runtime.transport import KafkaSettings, SpoolSettings
from shipper import config as shipper_config
from shipper.config import ShipperConfig
from tests.conftest import cri, pod_log, toml_str, write_config

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def service_links(service: str, ip: str, ports: list[tuple[str | None, int, str]]) -> dict[str, str]:
    """The variables kubelet injects for a Service (pkg/kubelet/envvars): ``ports`` as (name, port, protocol),
    the first one also as <SVC>_SERVICE_PORT and <SVC>_PORT."""
    svc = service.upper().replace("-", "_")
    host = f"[{ip}]" if ":" in ip else ip
    first_port, first_proto = ports[0][1], ports[0][2]
    env = {f"{svc}_SERVICE_HOST": ip, f"{svc}_SERVICE_PORT": str(first_port),
           f"{svc}_PORT": f"{first_proto.lower()}://{host}:{first_port}"}
    for name, port, proto in ports:
        if name:
            env[f"{svc}_SERVICE_PORT_{name.upper().replace('-', '_')}"] = str(port)
        var = f"{svc}_PORT_{port}_{proto.upper()}"
        env |= {var: f"{proto.lower()}://{host}:{port}", f"{var}_PROTO": proto.lower(),
                f"{var}_PORT": str(port), f"{var}_ADDR": ip}
    return env


SERVICES = {
    "loglake-shipper": ("10.0.0.1", [("metrics", 2020, "TCP")]),
    "loglake-aggregator": ("10.0.0.2", [("metrics", 2021, "TCP"), ("grpc-api", 9000, "TCP")]),
    "loglake-kafka": ("10.0.0.3", [("tls", 9093, "TCP"), ("plain", 9092, "TCP")]),
    "loglake-query": ("fd00::10", [(None, 8080, "TCP")]),           # IPv6, one unnamed port
    "loglake-spool": ("10.0.0.5", [("syslog", 514, "UDP"), ("ship", 9899, "SCTP")]),
}


def all_links(services: dict = SERVICES) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, (ip, ports) in services.items():
        env |= service_links(name, ip, ports)
    return env


LINKS = all_links()


def test_the_links_have_every_shape_kubelet_writes():
    assert LINKS["LOGLAKE_SHIPPER_PORT"] == "tcp://10.0.0.1:2020"
    assert LINKS["LOGLAKE_SHIPPER_PORT_2020_TCP"] == "tcp://10.0.0.1:2020"
    assert LINKS["LOGLAKE_SHIPPER_PORT_2020_TCP_PROTO"] == "tcp"
    assert LINKS["LOGLAKE_SHIPPER_PORT_2020_TCP_PORT"] == "2020"
    assert LINKS["LOGLAKE_SHIPPER_PORT_2020_TCP_ADDR"] == "10.0.0.1"
    assert LINKS["LOGLAKE_SHIPPER_SERVICE_HOST"] == "10.0.0.1"
    assert LINKS["LOGLAKE_SHIPPER_SERVICE_PORT"] == "2020"
    assert LINKS["LOGLAKE_SHIPPER_SERVICE_PORT_METRICS"] == "2020"
    assert LINKS["LOGLAKE_AGGREGATOR_SERVICE_PORT_GRPC_API"] == "9000"
    assert LINKS["LOGLAKE_QUERY_PORT"] == "tcp://[fd00::10]:8080"
    assert LINKS["LOGLAKE_SPOOL_PORT_514_UDP"] == "udp://10.0.0.5:514"
    assert LINKS["LOGLAKE_SPOOL_PORT_9899_SCTP_PROTO"] == "sctp"
    assert len(LINKS) == 3 * 5 + 5 * 8 - 1  # 5 services, 8 ports (one unnamed)


def test_shipper_loads_with_service_links(tmp_path):
    config = write_config(tmp_path)
    s = shipper_config.load(str(config), {**LINKS, "LOGLAKE_SHIPPER_NODE_NAME": "node-7"})
    assert s.shipper.node_name == "node-7"                      # a real override still applies
    assert s.shipper == dataclasses.replace(shipper_config.load(str(config), {}).shipper, node_name="node-7")
    # LOGLAKE_KAFKA_* links (a Service loglake-kafka) do not switch the transport to Kafka
    assert s.transport.name == "spool" and s.transport.kafka is None
    assert s.transport.spool.dir == tmp_path / "spool"


def test_aggregator_loads_with_service_links(tmp_path):
    config = write_config(tmp_path, tiers={"compact_interval_s": 0})
    s = aggregator_config.load(str(config), {**LINKS, "LOGLAKE_TIERS_WARM_AFTER_S": "600"})
    plain = aggregator_config.load(str(config), {})
    assert s.aggregator == plain.aggregator
    assert s.tiers == dataclasses.replace(plain.tiers, warm_after_s=600)
    assert s.retention == plain.retention
    assert s.transport.name == "spool"


def test_query_loads_with_service_links(tmp_path):
    config = write_config(tmp_path)
    assert query_config.load(str(config), LINKS) == QueryConfig()
    assert query_config.load(str(config), {**LINKS, "LOGLAKE_QUERY_TZ": "Europe/Paris"}).tz == "Europe/Paris"
    assert query_config.load(None, LINKS) == QueryConfig()


def test_kafka_section_loads_with_service_links(tmp_path):
    config = tmp_path / "loglake.toml"
    config.write_text('[shipper]\nnode_name = "n"\n\n[kafka]\nbootstrap_servers = "kafka-0:9093"\n'
                      f"ca_file = {toml_str(tmp_path / 'ca.crt')}\n")
    s = shipper_config.load(str(config), {**LINKS, "LOGLAKE_KAFKA_TOPIC": "other"})
    assert s.transport.kafka == KafkaSettings(bootstrap_servers="kafka-0:9093", topic="other",
                                              ca_file=tmp_path / "ca.crt")
    a = aggregator_config.load(str(config), LINKS)
    assert a.transport.kafka == KafkaSettings(bootstrap_servers="kafka-0:9093", ca_file=tmp_path / "ca.crt")
    # a real LOGLAKE_KAFKA_* override alone still selects Kafka
    k = shipper_config.load(None, {**LINKS, "LOGLAKE_KAFKA_BOOTSTRAP_SERVERS": "b:9093"})
    assert k.transport.kafka is not None and k.transport.kafka.bootstrap_servers == "b:9093"


def test_longer_service_names_and_other_sections(tmp_path):
    """Services whose names only begin with a section's (loglake-kafka-bootstrap → LOGLAKE_KAFKA_BOOTSTRAP_PORT),
    and Services named after the other sections."""
    env = all_links({"loglake-kafka-bootstrap": ("10.0.1.1", [("tls", 9093, "TCP")]),
                     "loglake-shipper-metrics": ("10.0.1.2", [("http-metrics", 2020, "TCP")]),
                     "loglake-tiers": ("10.0.1.3", [(None, 80, "TCP")]),
                     "loglake-retention": ("10.0.1.4", [(None, 81, "TCP")])})
    assert "LOGLAKE_KAFKA_BOOTSTRAP_PORT" in env and "LOGLAKE_SHIPPER_METRICS_SERVICE_PORT_HTTP_METRICS" in env
    config = write_config(tmp_path)
    s = shipper_config.load(str(config), env)
    assert s.transport.kafka is None
    a = aggregator_config.load(str(config), env)
    assert a.tiers == TiersConfig() and a.retention == RetentionConfig()


@pytest.mark.parametrize("key, value", [
    ("LOGLAKE_SHIPPER_NODE_NAMEE", "node-7"),                 # the typo this check is for
    ("LOGLAKE_SHIPPER_PORT", "2020"),                         # *_PORT without a service-link URL
    ("LOGLAKE_SHIPPER_PORT", "http://10.0.0.1:2020"),
    ("LOGLAKE_SHIPPER_PORT", "tcp://10.0.0.1"),
    ("LOGLAKE_SHIPPER_PORT_2020", "tcp://10.0.0.1:2020"),     # no protocol
    ("LOGLAKE_SHIPPER_PORT_2020_HTTP", "tcp://10.0.0.1:2020"),
    ("LOGLAKE_SHIPPER_PORT_2020_TCP_HOST", "10.0.0.1"),
    ("LOGLAKE_SHIPPER_SERVICE_HOSTS", "10.0.0.1"),
    ("LOGLAKE_SHIPPER_SERVICE", "10.0.0.1"),
    ("LOGLAKE_SHIPPER_service_host", "10.0.0.1"),             # kubelet writes upper case only
])
def test_unknown_variables_are_still_errors(tmp_path, key, value):
    config = write_config(tmp_path)
    with pytest.raises(ConfigError, match=rf"environment variable {key} names no setting of \[shipper\]"):
        shipper_config.load(str(config), {**LINKS, key: value})


@pytest.mark.parametrize("key, section", [("LOGLAKE_AGGREGATOR_GROUPID", "aggregator"),
                                          ("LOGLAKE_TIERS_WARM_AFTER", "tiers"),
                                          ("LOGLAKE_KAFKA_PORT", "kafka"),
                                          ("LOGLAKE_SPOOL_DIRECTORY", "spool")])
def test_unknown_variables_of_other_sections_are_still_errors(tmp_path, key, section):
    config = write_config(tmp_path)
    with pytest.raises(ConfigError, match=rf"environment variable {key} names no setting of \[{section}\]"):
        aggregator_config.load(str(config), {**LINKS, key: "9093"})


@dataclasses.dataclass(frozen=True)
class WithPortSettings:
    port: int = 1
    service_host: str = "default"
    other: str = "x"


def test_a_real_setting_of_that_shape_wins_unless_its_value_is_a_service_link_url():
    def load(env: dict[str, str]) -> WithPortSettings:
        return config_file.load_section(WithPortSettings, config_file.read(None, env), "demo")
    assert load({"LOGLAKE_DEMO_PORT": "8080"}).port == 8080
    assert load({"LOGLAKE_DEMO_PORT": "tcp://10.0.0.9:8080"}).port == 1          # a Service loglake-demo
    assert load({"LOGLAKE_DEMO_SERVICE_HOST": "h"}).service_host == "h"
    links = service_links("loglake-demo", "10.0.0.9", [("web", 8080, "TCP")])
    assert load(links) == WithPortSettings(service_host="10.0.0.9")             # the setting's own name wins
    with pytest.raises(ConfigError, match="invalid value 'nope'"):
        load({"LOGLAKE_DEMO_PORT": "nope"})
    cfg = config_file.read(None, {k: v for k, v in links.items() if k != "LOGLAKE_DEMO_SERVICE_HOST"})
    assert not cfg.has_section("demo") and not cfg.has_section("demo", WithPortSettings)
    cfg = config_file.read(None, {"LOGLAKE_DEMO_SERVICE_HOST": "h"})
    assert cfg.has_section("demo", WithPortSettings) and not cfg.has_section("demo")
    assert config_file.read(None, {"LOGLAKE_DEMO_PORT": "8080"}).has_section("demo")


SECTIONS = (ShipperConfig, AggregatorConfig, TiersConfig, RetentionConfig, RetentionRule, QueryConfig,
            KafkaSettings, SpoolSettings)


def test_no_setting_has_a_service_link_shape_today():
    """If one gets such a name (say ``metrics_port``), the real setting wins over a Service's variable
    except for a service-link URL; this is where to notice and document that."""
    shaped = [f"{cls.__name__}.{f.name}" for cls in SECTIONS for f in dataclasses.fields(cls)
              if config_file.service_link(f.name.upper(), "tcp://10.0.0.1:1")]
    assert shaped == []


def test_shipper_process_starts_with_service_links(tmp_path):
    config = write_config(tmp_path)
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text(cri("2026-11-24T10:00:00Z", "hello") + cri("2026-11-24T10:00:01Z", "bye"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE_")} | LINKS
    env["LOGLAKE_SHIPPER_NODE_NAME"] = "node-k8s"
    bindir = Path(sys.executable).parent
    for tool in ("loglake-shipper", "loglake-aggregator"):
        exe = bindir / tool
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", tool.replace("loglake-", "") + ".cli"]
        proc = subprocess.run([*cmd, "--config", str(config), "--once", "--log-level", "WARNING"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        assert b"names no setting" not in proc.stderr
    assert [p.name for p in (tmp_path / "spool").iterdir()] == ["node-k8s"]
    import query
    rows = query.connect(str(config)).execute("SELECT node, body FROM logs ORDER BY source_offset").fetchall()
    assert rows == [("node-k8s", "hello"), ("node-k8s", "bye")]


def pod_specs(node: object) -> list[dict]:
    """Every pod spec in a manifest: any mapping that lists containers (Pod spec, a workload's
    template spec, a CronJob's jobTemplate's)."""
    if isinstance(node, dict):
        return ([node] if "containers" in node else []) + [s for v in node.values() for s in pod_specs(v)]
    if isinstance(node, list):
        return [s for v in node for s in pod_specs(v)]
    return []


MANIFESTS = sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml"))


def test_manifests_are_found():
    assert {p.name for p in MANIFESTS} >= {"shipper-daemonset.yaml", "shipper-sidecar.yaml"}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_every_pod_spec_disables_service_links(manifest):
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    workloads = [d for d in docs if d.get("kind") in ("Pod", "Deployment", "DaemonSet", "StatefulSet",
                                                      "ReplicaSet", "Job", "CronJob")]
    specs = pod_specs(docs)
    assert len(specs) == len(workloads) >= 1
    for spec in specs:
        assert spec.get("enableServiceLinks") is False, f"{manifest.name}: a pod spec without enableServiceLinks: false"
