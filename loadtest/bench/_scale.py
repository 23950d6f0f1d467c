"""What decides scale: Redis CPU per decision (one core serves one hash slot, so this bounds a
shared limit), and the decisions per second of several client processes against one Redis."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from ._contenders import NAMES, decisions
from ._measure import Comparison, Contender, Session
from ._probes import Child
from ._server import Recorder, Snapshot

CPU_SECONDS = 0.1
"""Seconds of decisions per CPU sample: about a thousand, so that the two INFO calls around
them weigh under 1% and the rusage clock's resolution nothing."""
CPU_ROUNDS = 25
PROCESSES = 4
SATURATION_SECONDS = 0.3
SATURATION_ROUNDS = 9
HAMMER = "loadtest.bench._hammer"


def server_cpu(session: Session) -> None:
    client = redis.Redis.from_url(session.url)
    session.stack.callback(client.close)
    rounds = max(3, min(session.rounds, CPU_ROUNDS))
    recorder = Recorder(client, CPU_SECONDS)
    found = decisions(session.url, session.prefix("cpu"), session.stack)
    contenders = [Contender(name, recorder.sampler(name, found[name])) for name in NAMES]
    cpu = Comparison(
        "cpu",
        "Redis CPU per decision, INFO cpu (used_cpu_sys + used_cpu_user) over decisions, "
        "one client",
        "µs",
        "limits FixedWindow",
        contenders,
        rounds,
        higher_is_better=False,
    )
    session.add(cpu)
    stats = Comparison(
        "commandstats",
        "Redis time per decision, INFO commandstats: the commands the client sent (EVALSHA "
        "including the commands its script calls)",
        "µs",
        "limits FixedWindow",
        cpu.contenders,
        rounds,
        higher_is_better=False,
    )
    # Taken in the same samples as the INFO cpu figures, round by round.
    stats.samples = {n: [s.commandstats_us for s in recorder.samples[n]] for n in NAMES}
    session.comparisons[stats.key] = stats
    session.notes["commandstats"] = recorder.note()


def saturation(session: Session) -> None:
    client = redis.Redis.from_url(session.url)
    session.stack.callback(client.close)
    children = []
    for _ in range(PROCESSES):
        child = Child("--url", session.url, "--prefix", session.prefix("sat"), module=HAMMER)
        session.stack.callback(child.close)
        children.append(child)
    cpu: dict[str, list[float]] = {name: [] for name in NAMES}

    def together(name: str) -> Callable[[], float]:
        def sample() -> float:
            request = json.dumps({"run": name, "seconds": SATURATION_SECONDS})
            before = Snapshot.take(client)
            for child in children:
                child.send(request)
            answers = [child.read() for child in children]
            after = Snapshot.take(client)
            decisions = sum(int(a["decisions"]) for a in answers)
            cpu[name].append((after.cpu - before.cpu) * 1e6 / decisions)
            return sum(int(a["decisions"]) / float(a["seconds"]) for a in answers)

        return sample

    rounds = max(3, min(session.rounds, SATURATION_ROUNDS))
    contenders = [Contender(name, together(name)) for name in NAMES]
    title = f"{PROCESSES} client processes, each with its own client, on one key (the callers "
    session.add(
        Comparison(
            "saturation",
            f"Saturation: {title}of one limit) of one Redis",
            "ops/s",
            "limits FixedWindow",
            contenders,
            rounds,
        )
    )
    busy = Comparison(
        "saturation-cpu",
        f"Redis CPU per decision (INFO cpu) at saturation: {title}of one limit)",
        "µs",
        "limits FixedWindow",
        contenders,
        rounds,
        higher_is_better=False,
    )
    # Taken in the same samples as the saturation figures, round by round.
    busy.samples = cpu
    session.comparisons[busy.key] = busy
