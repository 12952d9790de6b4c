"""``[shipper]``: what to read, how to batch, where to keep state."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from runtime import config as config_file
from runtime import transport
from runtime.errors import ConfigError


@dataclass(frozen=True)
class ShipperConfig:
    # Name of this node in every record (Kubernetes: the downward API's spec.nodeName).
    node_name: str = socket.gethostname()
    # Files to tail; globs (relative ones are relative to the config file).
    # Kubernetes: /var/log/containers/*.log (symlinks into /var/log/pods).
    include: tuple[Path, ...] = (Path("/var/log/containers/*.log"),)
    # Paths to skip; shell patterns matched against the whole path ('*' crosses '/').
    # Compressed rotated files are skipped by default.
    exclude: tuple[str, ...] = ("*.gz", "*.bz2", "*.xz", "*.zst", "*.zip")
    # Static labels added to every record's attributes.
    labels: dict[str, str] = field(default_factory=dict)
    # Checkpoints and other state of this agent.
    data_dir: Path = Path("/var/lib/loglake-shipper")
    # How often files are checked for new data and new files are looked for.
    poll_interval_ms: int = 250
    # A renamed or deleted file is read to its end, then closed once this long has passed.
    rotate_wait_ms: int = 5000
    # Log files held open at most (shipper.slots); 0: as many as RLIMIT_NOFILE allows, less 64 kept for
    # sockets, the buffer and the checkpoint. A file beyond it waits and is opened when a descriptor frees.
    max_open_files: int = 0
    # A file read to its end and idle this long is closed, and opened again by path when it changes
    # (Filebeat's close_inactive, 5 minutes); 0: only when files wait for a descriptor.
    close_idle_after_ms: int = 300000
    # Bytes read from one file per turn, so one busy file cannot starve the others.
    read_chunk_bytes: int = 1024 * 1024
    # Longer records are truncated and flagged.
    max_record_bytes: int = 1024 * 1024
    # A batch is sent when it holds this many bytes of records or is this old.
    batch_max_bytes: int = 1024 * 1024
    batch_max_wait_ms: int = 200
    # A container quiet this long after its last records sends a small report of how far each of its
    # files was read, so the lake can tell a tail that never arrived (verify); finished files at once.
    report_interval_ms: int = 10000
    # Batch compression. Level 1 is the default because on container logs it compressed better than 3
    # (6.6x vs 6.1x on the benchmark's batches) at 1.5x the speed.
    zstd_level: int = 1
    # Multi-line events: presets (java, python, go) and custom continuation regexes.
    multiline: tuple[str, ...] = ()
    multiline_patterns: tuple[str, ...] = ()
    multiline_flush_ms: int = 1000
    # Redaction before anything leaves the node: built-in rules by name, plus custom regexes.
    redact: tuple[str, ...] = ("bearer_token", "url_password", "aws_access_key", "card_number", "email")
    redact_patterns: tuple[str, ...] = ()
    # A line's own time (a JSON or logfmt time field) is the workload's word: it is kept as the event time
    # only this far before or after the runtime's time of the line (a plain file's: when it was read).
    # A claim outside the window, or that is no time at all, gives way to the runtime's time and is kept as
    # attribute _claimed_time (flag time_claimed), so no line can place itself outside retention or spread
    # over partitions the lake has to walk.
    event_time_max_past_s: int = 7 * 24 * 3600
    event_time_max_future_s: int = 3600
    # Batches sent but not yet acknowledged, at most.
    max_inflight_batches: int = 64
    # While the transport is down, batches wait on disk (<data_dir>/buffer) up to this size;
    # when it is full, reading stops until it drains.
    buffer_max_bytes: int = 256 * 1024 * 1024
    # A batch not acknowledged in this time is moved to the disk buffer and retried from there.
    ack_timeout_ms: int = 15000
    # SIGTERM: stop reading, flush and wait for acknowledgements at most this long.
    shutdown_grace_ms: int = 10000
    # HTTP /metrics and /healthz, e.g. "0.0.0.0:2020"; empty: off.
    metrics_address: str = ""
    # Client identity for Kafka mutual TLS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    shipper: ShipperConfig
    transport: transport.TransportSettings


def load(path: str | None, env: dict[str, str] | None = None) -> Settings:
    cfg = config_file.read(path, env)
    shipper = config_file.load_section(ShipperConfig, cfg, "shipper")
    if not shipper.include:
        raise ConfigError("[shipper] include is empty; list the globs of the log files to ship")
    if shipper.batch_max_bytes < 1024:
        raise ConfigError("[shipper] batch_max_bytes must be at least 1024")
    config_file.check_range("shipper", "zstd_level", shipper.zstd_level, *config_file.ZSTD_LEVELS,
                            " (zstd: 1 fastest, 22 smallest)")
    for name in ("event_time_max_past_s", "event_time_max_future_s", "max_open_files", "close_idle_after_ms"):
        if getattr(shipper, name) < 0:
            raise ConfigError(f"[shipper] {name} must be 0 or more")
    return Settings(shipper, transport.load(cfg))
