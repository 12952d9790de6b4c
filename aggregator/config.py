"""``[aggregator]``: where data lives, how often hot files are cut, client identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas import config as config_file
from schemas import transport


@dataclass(frozen=True)
class AggregatorConfig:
    # Root of local storage: hot/ files, catalog.sqlite, quarantine/, keys/.
    data_dir: Path = Path("var/lake")
    # Master key file (wraps the data keys); created on first run (owner-only) if missing.
    # Default: <data_dir>/keys/master.key. master_key (base64, from the environment:
    # LOGLAKE_AGGREGATOR_MASTER_KEY) or master_key_command (a KMS hook printing it) take precedence.
    key_file: Path | None = None
    master_key: str | None = None
    master_key_command: str | None = None
    group_id: str = "loglake-aggregator"
    # A partition's buffer becomes a hot file when it holds this many records or bytes, or is this old.
    flush_max_records: int = 500_000
    flush_max_bytes: int = 64 * 1024 * 1024
    flush_interval_ms: int = 1000
    parquet_row_group_size: int = 122_880
    parquet_zstd_level: int = 3
    # Client identity for Kafka mutual TLS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # HTTP /metrics and /healthz, e.g. "0.0.0.0:2021"; empty: off.
    metrics_address: str = ""

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.sqlite"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "keys" / "master.key"


@dataclass(frozen=True)
class Settings:
    aggregator: AggregatorConfig
    transport: transport.TransportSettings


def load(path: str | None, env: dict[str, str] | None = None) -> Settings:
    cfg = config_file.read(path, env)
    return Settings(config_file.load_section(AggregatorConfig, cfg, "aggregator"), transport.load(cfg))
