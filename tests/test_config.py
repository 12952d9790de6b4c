"""One TOML file, a section per component, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import config as agg_config
from runtime.errors import ConfigError
from shipper import config as shipper_config


def write(tmp: Path, text: str) -> Path:
    p = tmp / "conf" / "loglake.toml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return p


def test_sections_paths_and_env_overrides(tmp_path):
    p = write(tmp_path, '[shipper]\nnode_name = "n1"\ninclude = ["logs/*.log"]\nbatch_max_wait_ms = 100\n'
                        '[aggregator]\ndata_dir = "lake"\n[kafka]\nbootstrap_servers = "k:9093"\n')
    env = {"LOGLAKE_SHIPPER_BATCH_MAX_WAIT_MS": "300", "LOGLAKE_KAFKA_TOPIC": "logs.prod",
           "LOGLAKE_SHIPPER_EXCLUDE": "*.gz, *.tmp"}
    s = shipper_config.load(str(p), env)
    assert s.shipper.node_name == "n1"
    assert s.shipper.include == (tmp_path / "conf" / "logs/*.log",)  # relative to the file
    assert s.shipper.batch_max_wait_ms == 300                         # environment wins
    assert s.shipper.exclude == ("*.gz", "*.tmp")
    assert s.transport.kafka.topic == "logs.prod" and s.transport.kafka.bootstrap_servers == "k:9093"
    a = agg_config.load(str(p), env)
    assert a.aggregator.data_dir == tmp_path / "conf" / "lake"
    assert a.aggregator.resolved_key_file == tmp_path / "conf" / "lake" / "keys" / "master.key"


def test_no_kafka_section_means_spool(tmp_path):
    p = write(tmp_path, '[spool]\ndir = "sp"\n')
    s = shipper_config.load(str(p), {})
    assert s.transport.kafka is None and s.transport.name == "spool"
    assert s.transport.spool.dir == tmp_path / "conf" / "sp"
    assert shipper_config.load(str(p), {"LOGLAKE_KAFKA_BOOTSTRAP_SERVERS": "x:1"}).transport.name == "kafka"


@pytest.mark.parametrize("text, env, message", [
    ("[shipper]\nbogus = 1\n", {}, r"unknown key\(s\) bogus in \[shipper\]"),
    ("[shipper]\nbatch_max_bytes = \"big\"\n", {}, r"\[shipper\] batch_max_bytes has an invalid value 'big'"),
    ("", {"LOGLAKE_SHIPPER_NOPE": "1"}, "LOGLAKE_SHIPPER_NOPE names no setting"),
    ("[shipper\n", {}, "is not valid TOML"),
])
def test_errors_are_actionable(tmp_path, text, env, message):
    with pytest.raises(ConfigError, match=message):
        shipper_config.load(str(write(tmp_path, text)), env)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pass --config"):
        shipper_config.load(str(tmp_path / "nope.toml"), {})


@pytest.mark.parametrize("section,key,value,expected", [
    ("aggregator", "parquet_zstd_level", 0, "[aggregator] parquet_zstd_level = 0 is out of range: use 1 to 22"),
    ("aggregator", "parquet_zstd_level", 23, "[aggregator] parquet_zstd_level = 23 is out of range: use 1 to 22"),
    ("tiers", "cold_zstd_level", -5, "[tiers] cold_zstd_level = -5 is out of range: use 1 to 22"),
    ("tiers", "warm_row_group_size", 1 << 25, "[tiers] warm_row_group_size = 33554432 is out of range: use 2048 to "
                                              "16777216 rows"),
    ("tiers", "cold_row_group_size", 3000, "[tiers] cold_row_group_size = 3000 must be a positive multiple of 2048"),
    ("tiers", "cold_file_max_rows", -1, "[tiers] cold_file_max_rows = -1 must be 0 (no limit) or more"),
    ("aggregator", "flush_max_records", 0, "[aggregator] flush_max_records = 0 is out of range: use 1 to"),
    ("shipper", "zstd_level", 99, "[shipper] zstd_level = 99 is out of range: use 1 to 22"),
])
def test_levels_and_sizes_are_range_checked(tmp_path, section, key, value, expected):

    path = tmp_path / "loglake.toml"
    path.write_text(f'[shipper]\ninclude = ["/x/*.log"]\n\n[{section}]\n{key} = {value}\n' if section != "shipper"
                    else f'[shipper]\ninclude = ["/x/*.log"]\n{key} = {value}\n')
    load = shipper_config.load if section == "shipper" else agg_config.load
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert str(e.value).startswith(expected)


def test_the_edges_of_the_ranges_are_accepted(tmp_path):
    path = tmp_path / "loglake.toml"
    path.write_text('[shipper]\ninclude = ["/x/*.log"]\nzstd_level = 22\n\n[aggregator]\nparquet_zstd_level = 1\n'
                    f'parquet_row_group_size = {1 << 24}\n\n[tiers]\nwarm_row_group_size = 2048\ncold_zstd_level = 22\n')
    settings = agg_config.load(str(path))
    assert (settings.aggregator.parquet_zstd_level, settings.tiers.warm_row_group_size) == (1, 2048)
    assert shipper_config.load(str(path)).shipper.zstd_level == 22
