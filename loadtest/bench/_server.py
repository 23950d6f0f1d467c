"""Redis CPU per decision: what decides how far one Redis core (one hash slot) scales.

A sample runs one contender's decisions back to back between two ``INFO cpu commandstats``
snapshots of the bench's own redis-server (no one else's traffic there), and reads two figures:
the server's ``used_cpu_sys + used_cpu_user`` delta per decision (everything it spent, the
network included), and the commandstats time per decision of the commands the client sent (a
script's ``EVALSHA`` includes the commands it calls, so those are left out of the sum). Which
commands a contender sends itself is learnt once, with ``MONITOR``, before the samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from loadtest._probe import CHECK_EVERY

SCRIPTED = "lua"
"""The client type ``MONITOR`` shows for a command a script called."""
OWN = frozenset({"info", "monitor", "echo", "config|resetstat"})
"""The bench's own commands, never a contender's."""


@dataclass(frozen=True)
class Snapshot:
    cpu: float
    """Seconds of CPU the server has used, system and user."""
    calls: Mapping[str, tuple[int, int]]
    """Per command: calls and microseconds."""

    @classmethod
    def take(cls, client: redis.Redis) -> Snapshot:
        info = cast(dict[str, Any], client.info("cpu", "commandstats"))
        calls = {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in info.items()
            if name.startswith("cmdstat_")
        }
        return cls(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), calls)


@dataclass(frozen=True)
class Sample:
    decisions: int
    cpu_us: float
    """``INFO cpu`` microseconds per decision."""
    commands: Mapping[str, tuple[float, float]]
    """Per command: calls per decision and microseconds per call."""
    sent: frozenset[str]
    """The commands the client sent itself."""

    @property
    def commandstats_us(self) -> float:
        """Commandstats microseconds per decision, summed over the commands sent."""
        return sum(n * us for name, (n, us) in self.commands.items() if name in self.sent)


def sent_commands(client: redis.Redis, decide: Callable[[], object]) -> frozenset[str]:
    """The commands ``decide`` sends itself (not those its scripts call), seen by ``MONITOR``."""
    marker = f"bench-monitor-{time.time_ns()}"
    sent: set[str] = set()
    with client.monitor() as monitor:  # type: ignore[no-untyped-call]
        for _ in range(3):
            decide()
        client.echo(marker)
        while True:
            seen = monitor.next_command()
            command = str(seen["command"])
            if marker in command:
                break
            if seen.get("client_type") != SCRIPTED:
                sent.add(command.split()[0].strip('"').lower())
    return frozenset(sent - OWN)


def measure(
    client: redis.Redis, decide: Callable[[], object], seconds: float, sent: frozenset[str]
) -> Sample:
    """``decide`` run back to back for about ``seconds`` between two snapshots."""
    before = Snapshot.take(client)
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(CHECK_EVERY):
            decide()
        done += CHECK_EVERY
    after = Snapshot.take(client)
    commands = {}
    for name, (calls, usec) in after.calls.items():
        calls_then, usec_then = before.calls.get(name, (0, 0))
        if name in OWN or calls == calls_then:
            continue
        commands[name] = ((calls - calls_then) / done, (usec - usec_then) / (calls - calls_then))
    return Sample(done, (after.cpu - before.cpu) * 1e6 / done, commands, sent)


@dataclass
class Recorder:
    """Each contender's samples, kept whole for the commandstats figures and the note."""

    client: redis.Redis
    seconds: float
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def sampler(self, name: str, decide: Callable[[], object]) -> Callable[[], float]:
        """A sample of ``name``'s ``INFO cpu`` µs per decision; the rest is recorded."""
        decide()  # loads its script, opens its connection
        sent = sent_commands(self.client, decide)
        self.samples[name] = []

        def sample() -> float:
            taken = measure(self.client, decide, self.seconds, sent)
            self.samples[name].append(taken)
            return taken.cpu_us

        return sample

    def note(self) -> str:
        """Per contender: the median µs per call and calls per decision of each command."""
        lines = ["Commandstats per contender (median µs per call, calls per decision):", ""]
        for name, samples in self.samples.items():
            names = sorted({c for s in samples for c in s.commands}, key=_sent_first(samples))
            parts = []
            for command in names:
                seen = [s.commands[command] for s in samples if command in s.commands]
                calls = statistics.median(n for n, _ in seen)
                usec = statistics.median(us for _, us in seen)
                inner = "" if command in samples[0].sent else ", in the script"
                parts.append(f"{command.upper()} {usec:.2f} µs x {calls:.3g}{inner}")
            lines.append(f"- {name}: {'; '.join(parts)}")
        return "\n".join(lines)


def _sent_first(samples: list[Sample]) -> Callable[[str], tuple[bool, str]]:
    return lambda command: (command not in samples[0].sent, command)
