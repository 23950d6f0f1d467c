"""Redis processes with faults that can be switched on and off, and the contract's bounds.

A fault is injected while a load runs, held, and healed; the tests then check what the contract
promises: no exception, each decision inside its time bound, fail-open (or fail-closed) told in
the Decision, the log and the metric, and exact decisions again within a second of Redis
returning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import redis

from loadtest.servers import RedisServer
from tests.support.proxy import BlackholeProxy

DECISION_BOUND = 0.25
"""The contract's ceiling for one decision, in seconds."""
RECOVERY_BOUND = 1.0
"""Exact decisions must be back within this many seconds of Redis returning."""
FAULT_SECONDS = 0.8
"""How long a fault is held: longer than the breaker's recovery time (0.5 s), so that its
half-open probes meet the fault too."""


class Fault(ABC):
    """A Redis that can be broken and mended; ``url`` is where the code under test connects."""

    name: str
    loses_data: bool = False
    """Counters and scripts are gone once Redis is back."""
    held: bool = True
    """The fault lasts until `heal`; otherwise `inject` is over when it returns."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.server.port, socket_timeout=2.0)

    @abstractmethod
    def inject(self) -> None: ...

    @abstractmethod
    def heal(self) -> None:
        """Undo the fault; when it returns, Redis is back."""

    def close(self) -> None:
        self.server.cleanup()


class Killed(Fault):
    """SIGKILL in the middle of the load; started again, empty, once the fault is healed."""

    name = "killed"
    loses_data = True

    def inject(self) -> None:
        self.server.kill()

    def heal(self) -> None:
        self.server.start()


class Stalled(Fault):
    """SIGSTOP: the connections stay open and nothing answers; SIGCONT to heal."""

    name = "stalled"

    def inject(self) -> None:
        self.server.pause()

    def heal(self) -> None:
        self.server.resume()


class RestartedEmpty(Fault):
    """A restart (SIGTERM, then start at once): every counter and cached script is gone."""

    name = "restarted_empty"
    loses_data = True
    held = False

    def inject(self) -> None:
        self.server.restart()

    def heal(self) -> None:
        """Nothing to undo: Redis is back when `inject` returns."""


class OutOfMemory(Fault):
    """``maxmemory`` below the memory in use, with ``noeviction``: writes are refused."""

    name = "out_of_memory"

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self._admin = self.admin()

    def inject(self) -> None:
        used = int(self._admin.info("memory")["used_memory"])
        self._admin.config_set("maxmemory", used // 2)

    def heal(self) -> None:
        self._admin.config_set("maxmemory", 0)

    def close(self) -> None:
        self._admin.close()
        super().close()


class MaxClients(Fault):
    """Redis at ``maxclients`` when the limiter needs a connection: every connection but the
    admin's is dropped and no new one is admitted until the limit is raised again."""

    name = "max_clients"
    FULL = 1  # the admin's own connection fills it

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self._admin = self.admin()
        self._normal = int(self._admin.config_get("maxclients")["maxclients"])

    def inject(self) -> None:
        self._admin.config_set("maxclients", self.FULL)
        self._admin.client_kill_filter(_type="normal", skipme=True)

    def heal(self) -> None:
        self._admin.config_set("maxclients", self._normal)

    def close(self) -> None:
        self._admin.close()
        super().close()


class Blackholed(Fault):
    """Behind a TCP proxy that stops forwarding without closing: silence, no reset."""

    name = "blackholed"

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self.proxy = BlackholeProxy(server.port).start()

    @property
    def url(self) -> str:
        return self.proxy.url

    def inject(self) -> None:
        self.proxy.blackhole()

    def heal(self) -> None:
        self.proxy.heal()

    def close(self) -> None:
        self.proxy.stop()
        super().close()


FAULTS: dict[str, tuple[type[Fault], tuple[str, ...]]] = {
    "killed": (Killed, ()),
    "stalled": (Stalled, ()),
    "restarted_empty": (RestartedEmpty, ()),
    "out_of_memory": (OutOfMemory, ("--maxmemory-policy", "noeviction")),
    "max_clients": (MaxClients, ()),
    "blackholed": (Blackholed, ()),
}


def start_fault(name: str) -> Fault:
    """A redis-server of its own, started with what the fault needs, ready to break."""
    kind, args = FAULTS[name]
    return kind(RedisServer(extra_args=args).start())
