"""The suite's options (one scenario's figures: cycles, rates, rotation and kill timing) and the
paths they default to."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


@dataclass
class Options:
    cycles: int = 30
    rate: float = 2000.0                  # logical lines per second, all files together
    files: int = 8
    rotate: tuple[float, float] | None = (15.0, 40.0)   # None: no rotation
    wait: tuple[float, float] = (1.0, 6.0)
    down: tuple[float, float] = (0.5, 3.0)
    outage_s: float = 120.0
    warmup_s: float = 3.0
    settle_s: float = 3.0
    quiet_s: float = 30.0                 # scenario "none": how long the writers run with nothing killed
    partial_share: float = 0.06
    java_share: float = 0.04
    json_share: float = 0.3
    copytruncate_share: float = 0.35
    kill_after_rotation_share: float = 0.3
    rotate_while_down_share: float = 0.3
    transport: str | None = None          # override the scenario's transport
    certs: Path = ROOT / "var" / "certs"
    bin: Path = BIN                       # where loglake-shipper and loglake-aggregator are
    seed: int | None = None
    poll_interval_ms: int = 100
    multiline_flush_ms: int = 1000
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)   # --set SECTION.KEY=VALUE
    drain_rounds: int = 6
    time_limit_s: float | None = None     # per scenario; default from the other figures

    @classmethod
    def short(cls, **kw: object) -> "Options":
        """The quick form: few cycles, short rotations and waits, a 20 s broker outage."""
        base = cls(cycles=4, rotate=(3.0, 8.0), wait=(1.0, 3.0), down=(0.5, 2.0), outage_s=20.0,
                   warmup_s=2.0, settle_s=2.0, quiet_s=10.0)
        return replace(base, **kw)

    def limit(self, kafka: bool) -> float:
        if self.time_limit_s:
            return self.time_limit_s
        per_cycle = self.wait[1] + self.down[1] + (40 if kafka else 10)
        return 240 + self.cycles * per_cycle + self.outage_s + (self.rotate[1] if self.rotate else 0)
