"""The example Kubernetes manifests carry configurations the shipper accepts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shipper import config as shipper_config

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def embedded_toml(manifest: Path) -> str:
    lines = manifest.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "loglake.toml: |") + 1
    block = []
    for ln in lines[start:]:
        if ln.strip() == "---":
            break
        block.append(ln)
    return textwrap.dedent("\n".join(block))


@pytest.mark.parametrize("name", ["shipper-daemonset.yaml", "shipper-sidecar.yaml"])
def test_manifest_config_loads(tmp_path, name):
    cfg = tmp_path / "loglake.toml"
    cfg.write_text(embedded_toml(K8S / name))
    s = shipper_config.load(str(cfg), {"LOGLAKE_SHIPPER_NODE_NAME": "node-7"})
    assert s.shipper.node_name == "node-7"
    assert s.transport.kafka is not None and s.transport.kafka.topic == "loglake.logs"
    assert s.shipper.metrics_address.endswith(":2020")
    assert s.shipper.tls_cert_file == Path("/etc/loglake/tls/tls.crt")
