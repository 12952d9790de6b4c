"""A shipper as a sidecar: two pods of one workload on one node are two sets of sources.

Every pod's sidecar reads its app's logs under the same path (an emptyDir mounted at the same place),
and an app's log often begins with the same line in every pod (a banner). Both shippers name the same
node, so without the pod's uid in the identity the two pods' files were one source, and the lake kept
only the first pod's lines (the second's were "duplicates" of the same offsets).
"""

from __future__ import annotations

import time
from collections import Counter

from shipper.enrich import SIDECAR_ENV
from tests.test_rotation import once, seqs, verify
from tests.conftest import cri, write_config
from tests.test_metrics import start, stop, wait_until

TS = "2026-12-01T10:00:{:02d}.{:09d}Z"
BANNER = cri("2026-12-01T10:00:00.000000000Z", "billing-invoices 1.4.2 starting")


def pod(env: dict[str, str], monkeypatch, tmp_path, name: str, uid: str, first: int, n: int):
    """One pod's sidecar run: its own state directory, the same log path as every other pod's."""
    for key, value in {SIDECAR_ENV["namespace"]: "billing", SIDECAR_ENV["pod"]: name, SIDECAR_ENV["pod_uid"]: uid,
                       SIDECAR_ENV["container"]: "app", "LOGLAKE_SHIPPER_DATA_DIR": str(tmp_path / name),
                       **env}.items():
        monkeypatch.setenv(key, value)
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(BANNER + "".join(cri(TS.format(i % 60, i), f"seq={i} invoice") for i in range(first, first + n)))


def test_two_pods_with_the_same_path_and_banner_on_one_node_keep_every_line(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, shipper={"node_name": "node-7"})
    pod({}, monkeypatch, tmp_path, "billing-invoices-a", "0f1e2d3c-0000-4000-8000-00000000000a", 0, 50)
    once(config)
    # the second pod: a new emptyDir (same path), the same first line, more lines than the first pod wrote
    pod({}, monkeypatch, tmp_path, "billing-invoices-b", "0f1e2d3c-0000-4000-8000-00000000000b", 1000, 80)
    once(config)
    found = seqs(config)
    assert found == Counter({None: 2, **dict.fromkeys(range(50), 1), **dict.fromkeys(range(1000, 1080), 1)}), found
    import query
    rows = query.connect(str(config)).execute(
        "SELECT pod, pod_uid, node, count(*), count(DISTINCT source_id) FROM logs GROUP BY ALL ORDER BY 1").fetchall()
    assert rows == [("billing-invoices-a", "0f1e2d3c-0000-4000-8000-00000000000a", "node-7", 51, 1),
                    ("billing-invoices-b", "0f1e2d3c-0000-4000-8000-00000000000b", "node-7", 81, 1)]
    assert verify(config, capsys)[0] == 0


def test_sigterm_reads_what_the_app_wrote_since_the_last_turn(tmp_path, monkeypatch):
    """A Job's sidecar is stopped (SIGTERM) right after its app exits, and the emptyDir goes with the pod:
    the lines the app wrote since the shipper's last turn, a new file's too, must be read before it stops."""
    config = write_config(tmp_path, shipper={"node_name": "node-7", "poll_interval_ms": 60_000,
                                             "shutdown_grace_ms": 10_000})
    pod({}, monkeypatch, tmp_path, "billing-invoices-a", "0f1e2d3c-0000-4000-8000-00000000000a", 0, 10)
    proc = start("shipper", config)
    try:
        wait_until(lambda: (tmp_path / "billing-invoices-a" / "checkpoints.json").exists(),
                   "the shipper never saved a checkpoint", timeout=30)
        time.sleep(0.5)   # the first turn is done; the next is a minute away
        with (tmp_path / "logs" / "app.log").open("a") as f:
            f.write("".join(cri(TS.format(i % 60, i), f"seq={i} invoice") for i in range(10, 40)))
        (tmp_path / "logs" / "last.log").write_text(cri(TS.format(59, 0), "seq=40 invoice"))
    finally:
        stop(proc)
    assert seqs(config) == Counter({None: 1, **dict.fromkeys(range(41), 1)})


def test_a_sidecar_follows_no_link_the_app_plants(tmp_path, monkeypatch, capsys):
    """The app shares the log directory with its sidecar: a link there to a file only the shipper may read
    (its TLS key) must not put that file into the lake."""
    config = write_config(tmp_path, shipper={"node_name": "node-7"})
    pod({}, monkeypatch, tmp_path, "billing-invoices-a", "0f1e2d3c-0000-4000-8000-00000000000a", 0, 5)
    secret = tmp_path / "secret" / "tls.key"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN PRIVATE KEY-----\nseq=999 MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")
    (tmp_path / "logs" / "x.log").symlink_to(secret)
    once(config)
    assert seqs(config) == Counter({None: 1, **dict.fromkeys(range(5), 1)})
    import query
    assert query.connect(str(config)).execute(
        "SELECT count(*) FROM logs WHERE body LIKE '%PRIVATE KEY%'").fetchone() == (0,)
