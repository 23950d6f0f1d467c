"""What one fleet run is: `FleetConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

STALL: Final = "stall"
"""SIGSTOP for the outage, then SIGCONT: connections stay open and nothing answers."""
KILL: Final = "kill"
"""SIGKILL, then a new redis-server on the same port, empty, after the outage."""
FAULTS: Final = (STALL, KILL)
DEFAULT_CONTAINERS: Final = 6
DEFAULT_MAX_CPS: Final = 60
DEFAULT_DEMAND: Final = 2.0
DEFAULT_OUT: Final = Path("loadtest/results/fleet")


@dataclass(frozen=True)
class FleetConfig:
    """A fleet of ``containers`` dialers sharing ``max_cps``, with tasks arriving at ``demand``
    times ``max_cps``; Redis dials for ``warm_up`` seconds, is broken (``fault``) for
    ``outage`` seconds, and the fleet dials ``after`` seconds more once it is back."""

    fault: str = STALL
    fail_mode: str = "bounded"
    containers: int = DEFAULT_CONTAINERS
    max_cps: int = DEFAULT_MAX_CPS
    demand: float = DEFAULT_DEMAND
    warm_up: float = 4.0
    outage: float = 6.0
    after: float = 6.0
    out: Path = DEFAULT_OUT
    log_level: str = "WARNING"
    """The dialers' log level: INFO writes lines per dial, which costs the small machine."""
    env: Mapping[str, str] = field(default_factory=dict)
    """More of the dialers' environment."""

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {self.fault!r}")
        if self.containers < 1 or self.max_cps < 1:
            raise ValueError("containers and max_cps must be positive")
        if min(self.demand, self.warm_up, self.outage, self.after) <= 0:
            raise ValueError("demand and the durations must be positive")

    @property
    def rate_per_container(self) -> float:
        """Tasks arriving per second at each container."""
        return self.demand * self.max_cps / self.containers

    @property
    def label(self) -> str:
        return f"{self.fault}-{self.fail_mode}"
