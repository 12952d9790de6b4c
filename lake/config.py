"""``[aggregator]`` and ``[tiers]``: where the lake lives, its keys, and how each tier is written.

The aggregator is the lake's only writer, so the lake's place and keys are set in its section;
every reader (loglake-query) loads them from the same file."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from runtime import config as config_file
from runtime.config import ZSTD_LEVELS, Location, check_range
from runtime.errors import ConfigError

# DuckDB cuts row groups at multiples of its 2048-row vectors; sizes that are
# such multiples make row group i hold exactly rows [i*size, (i+1)*size), which
# the trace index relies on. DuckDB holds a row group in memory per writing
# thread, so a size beyond 16 Mi rows (gigabytes of logs) is refused too.
ROW_GROUP_QUANTUM = 2048
MAX_ROW_GROUP_SIZE = 1 << 24


def _check_layout(section: str, levels: dict[str, int], sizes: dict[str, int]) -> None:
    for name, level in levels.items():
        check_range(section, name, level, *ZSTD_LEVELS, " (zstd: 1 fastest, 22 smallest)")
    for name, size in sizes.items():
        if size <= 0 or size % ROW_GROUP_QUANTUM:
            raise ConfigError(f"[{section}] {name} = {size} must be a positive multiple of {ROW_GROUP_QUANTUM}")
        check_range(section, name, size, ROW_GROUP_QUANTUM, MAX_ROW_GROUP_SIZE, " rows")


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
    # HTTP /metrics, /healthz and /readyz, e.g. "0.0.0.0:2021"; empty: off.
    metrics_address: str = ""
    # /healthz fails when batches wait in the source and nothing has been committed for this long
    # beyond flush_interval_ms (a hung storage write, a consumer that no longer fetches); 0: never.
    stall_after_s: int = 300
    # The audit trail's public key ("ed25519:<hex>", printed by verify), held outside the lake: with it,
    # a trail re-signed under another key, catalog pin included, fails verify. Unset: the catalog's pin.
    audit_key_fingerprint: str | None = None

    def __post_init__(self) -> None:
        _check_layout("aggregator", {"parquet_zstd_level": self.parquet_zstd_level},
                      {"parquet_row_group_size": self.parquet_row_group_size})
        for name in ("flush_max_records", "flush_max_bytes", "flush_interval_ms"):
            check_range("aggregator", name, getattr(self, name), 1, 2**62)
        if self.stall_after_s < 0:
            raise ConfigError(f"[aggregator] stall_after_s = {self.stall_after_s} must be 0 (off) or more seconds")

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
class TiersConfig:
    """``[tiers]``: when hot files become warm and warm become cold, and where cold lives."""
    # How often the running aggregator compacts; 0 leaves it to `loglake-aggregator compact`.
    compact_interval_s: int = 60
    # Hot files written this long ago are merged into warm files: one per partition and hour of event time.
    warm_after_s: int = 300
    # A warm file smaller than this is merged again when more data for its hour arrives.
    warm_file_max_bytes: int = 256 * 1024 * 1024
    # A lookup (trace, container, needle) reads whole row groups, and DuckDB decompresses every column it
    # reads within one, matching or not; it also parses the footer of each file read, which grows with the
    # file's row groups. On realistic cold data (one day's file rewritten, one thread), a needle's row group
    # reads in 1.9 ms at 16,384 rows in a file of 10 where 65,536 rows in a file of 39 take 7.6, and a
    # trace's in 3.2 vs 12.6 ms. It costs bytes: 67.7 vs 62.2 B/record cold, 74.0 vs 70.0 warm (logdata.py).
    warm_row_group_size: int = 16_384
    warm_zstd_level: int = 3
    # Warm files whose UTC day ended this long ago are merged into cold files: one per partition and day,
    # or per run of whole hours of at most cold_file_max_rows (0: no limit) when the day holds more.
    cold_after_s: int = 2 * 86400
    cold_file_max_rows: int = 262_144
    # Cold storage root: a local directory or s3://bucket/prefix. Default: <data_dir>/cold.
    cold_dir: Location | None = None
    cold_row_group_size: int = 16_384
    cold_zstd_level: int = 9
    # Files replaced by compaction stay on storage this long, so queries planned before can finish.
    delete_grace_s: int = 300
    # s3:// cold storage (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    s3_region: str = "us-east-1"
    s3_endpoint: str = ""          # e.g. "minio.local:9000"; empty: AWS
    s3_url_style: str = "vhost"    # or "path"
    s3_use_ssl: bool = True

    def __post_init__(self) -> None:
        _check_layout("tiers", {"warm_zstd_level": self.warm_zstd_level, "cold_zstd_level": self.cold_zstd_level},
                      {"warm_row_group_size": self.warm_row_group_size, "cold_row_group_size": self.cold_row_group_size})
        if self.cold_file_max_rows < 0:
            raise ConfigError(f"[tiers] cold_file_max_rows = {self.cold_file_max_rows} must be 0 (no limit) or more")


def _check_secrets(cfg: config_file.ConfigFile) -> None:
    """An inline master key, or a KMS hook's command line (which often carries a token), is only as
    secret as the file that holds it."""
    secrets = {"master_key", "master_key_command"} & set(cfg.data.get("aggregator", {}))
    if cfg.path is None or not secrets:
        return
    mode = stat.S_IMODE(cfg.path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"config file {cfg.path} holds [aggregator] {' and '.join(sorted(secrets))} but is readable "
                          f"by group or others "
                          f"(mode {mode:o}); run 'chmod 600 {cfg.path}', or better pass the key in "
                          "LOGLAKE_AGGREGATOR_MASTER_KEY or use key_file or master_key_command")


@dataclass(frozen=True)
class LakeSettings:
    aggregator: AggregatorConfig
    tiers: TiersConfig


def read(path: str | None, env: dict[str, str] | None = None) -> tuple[config_file.ConfigFile, LakeSettings]:
    """The file, and the lake's sections of it (what every reader of the lake needs)."""
    cfg = config_file.read(path, env)
    _check_secrets(cfg)
    return cfg, LakeSettings(config_file.load_section(AggregatorConfig, cfg, "aggregator"),
                             config_file.load_section(TiersConfig, cfg, "tiers"))


def load(path: str | None, env: dict[str, str] | None = None) -> LakeSettings:
    return read(path, env)[1]

