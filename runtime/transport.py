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

from dataclasses import dataclass
from pathlib import Path

from runtime.config import ConfigFile, load_section


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


