"""The aggregator's settings: the lake's sections (lake.config), the transport, and ``[retention]``."""

from __future__ import annotations

from dataclasses import dataclass

from lake import config as lake_config
from lake.config import AggregatorConfig, TiersConfig
from runtime import config as config_file
from runtime import transport
from runtime.errors import ConfigError


@dataclass(frozen=True)
class RetentionRule:
    """``[[retention.rules]]``: how long records matching a selector are kept."""
    name: str
    days: int
    namespace: str | None = None   # globs; unset matches anything
    pod: str | None = None
    container: str | None = None
    level: str | None = None       # e.g. "debug", "trace,debug", "warn+"
    # Only a rule marked as erasure may keep records for less than the compliance floor.
    erasure: bool = False

    @property
    def specificity(self) -> int:
        """More selectors set, and fewer wildcards in them, is more specific."""
        set_ = [v for v in (self.namespace, self.pod, self.container, self.level) if v is not None]
        return len(set_) * 10 + sum(1 for v in set_ if not any(c in v for c in "*?["))


@dataclass(frozen=True)
class RetentionConfig:
    """``[retention]``: rules (most specific first), a default, and the compliance floor."""
    default_days: int = 180
    # No rule may keep data for less than this many days unless it is marked ``erasure = true``.
    floor_days: int = 180
    # How often the running aggregator applies retention; 0 leaves it to `loglake-aggregator retention`.
    interval_s: int = 3600
    rules: tuple[RetentionRule, ...] = ()

    def __post_init__(self) -> None:
        if self.default_days < self.floor_days:
            raise ConfigError(f"[retention] default_days = {self.default_days} is below the compliance floor of "
                              f"{self.floor_days} days; raise it or lower floor_days if your policy allows")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[retention.rules]] names must be unique; found {names}")
        for r in self.rules:
            if r.days < 0:
                raise ConfigError(f"retention rule {r.name!r}: days must not be negative")
            if r.days < self.floor_days and not r.erasure:
                raise ConfigError(f"retention rule {r.name!r} keeps {r.days} days, below the compliance floor of "
                                  f"{self.floor_days} days; mark it erasure = true if policy requires deleting "
                                  "these records sooner")

    def ordered(self) -> list[RetentionRule]:
        """Rules as evaluated: most specific first; the file's order breaks ties."""
        return sorted(self.rules, key=lambda r: -r.specificity)


@dataclass(frozen=True)
class Settings:
    aggregator: AggregatorConfig
    tiers: TiersConfig
    transport: transport.TransportSettings
    retention: RetentionConfig = RetentionConfig()


def load(path: str | None, env: dict[str, str] | None = None) -> Settings:
    cfg, lake = lake_config.read(path, env)
    return Settings(lake.aggregator, lake.tiers, transport.load(cfg),
                    config_file.load_section(RetentionConfig, cfg, "retention"))
