"""The two places batches travel through, as both ends must see them.

``[kafka]`` names the cluster and topic; when the file has no ``[kafka]``
section (and no LOGLAKE_KAFKA_* variable), batches go through the embedded
spool: ``[spool] dir``. Each component brings its own client certificate
(``tls_cert_file`` / ``tls_key_file`` in its own section) so the broker can tell
shippers from aggregators.

Spool layout: ``<dir>/<node>/<seq>.batch`` where ``seq`` is a zero-padded,
strictly increasing integer per node. A segment is one wire-format batch,
written to a temporary name, fsynced and renamed, so a reader never sees half a
segment. The node directory is the spool's "partition" and ``seq`` its offset.

A segment is a regular file of at most MAX_SEGMENT_BYTES: the largest batch
that can decode (a header, a node name of at most 65,535 bytes and a zstd frame
of a body of at most schemas.wire.MAX_BODY_BYTES, incompressible at worst).
Anything else found under a segment's name (a link, a FIFO, a device, a
directory, a larger file) is not a batch and is never read as one.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from schemas.config import ConfigFile, load_section
from schemas.errors import ConfigError
from schemas.wire import HEADER_SIZE, MAX_BODY_BYTES

SEGMENT_SUFFIX = ".batch"
_SEGMENT = re.compile(r"^(\d{20})\.batch$")
_SAFE_NODE = re.compile(r"[^A-Za-z0-9._-]")
# zstd's worst case is the input plus 1/256 of it and a few bytes; 1/128 and 64 KiB leave room.
MAX_SEGMENT_BYTES = HEADER_SIZE + 0xFFFF + MAX_BODY_BYTES + MAX_BODY_BYTES // 128 + (1 << 16)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19093"
    topic: str = "loglake.logs"
    # Used when loglake creates the topic (loglake-aggregator topics create).
    partitions: int = 3
    replication_factor: int = 1
    security_protocol: str = "SSL"  # SSL | SASL_SSL | PLAINTEXT (tests of refusal only)
    ca_file: Path | None = None
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = None
    # Largest batch the producer may send and the topic accepts (topic max.message.bytes).
    max_message_bytes: int = 8 * 1024 * 1024
    request_timeout_ms: int = 30000


@dataclass(frozen=True)
class SpoolSettings:
    dir: Path = Path("var/spool")


@dataclass(frozen=True)
class TransportSettings:
    kafka: KafkaSettings | None
    spool: SpoolSettings

    @property
    def name(self) -> str:
        return "kafka" if self.kafka else "spool"


def load(cfg: ConfigFile) -> TransportSettings:
    kafka = load_section(KafkaSettings, cfg, "kafka") if cfg.has_section("kafka") else None
    return TransportSettings(kafka=kafka, spool=load_section(SpoolSettings, cfg, "spool"))


def client_ssl_context(kafka: KafkaSettings, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """TLS context for a Kafka client: verify the broker against ``ca_file`` and,
    for mutual TLS, present ``cert_file``/``key_file``."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    for label, p in (("kafka ca_file", kafka.ca_file), ("client certificate", cert_file), ("client key", key_file)):
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{label} {p} does not exist; run 'loglake-aggregator certs --out DIR' for a dev PKI "
                              "or point the setting at your cluster's files")
    ctx = ssl.create_default_context(cafile=str(kafka.ca_file) if kafka.ca_file else None)
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise ConfigError("mutual TLS needs both tls_cert_file and tls_key_file")
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as e:
            raise ConfigError(f"cannot load client certificate {cert_file} with key {key_file}: {e.reason or e}") from None
    return ctx


def safe_name(node: str) -> str:
    return _SAFE_NODE.sub("_", node) or "_"


def segment_name(seq: int) -> str:
    return f"{seq:020d}{SEGMENT_SUFFIX}"


def list_segments(node_dir: Path) -> list[tuple[int, Path]]:
    """Complete segments of one node, oldest first (temporary files are skipped)."""
    try:
        names = os.listdir(node_dir)
    except FileNotFoundError:
        return []
    out = [(int(m.group(1)), node_dir / n) for n in names if (m := _SEGMENT.match(n))]
    out.sort()
    return out
