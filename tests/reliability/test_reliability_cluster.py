"""Redis Cluster: six real nodes on loopback (three masters, three replicas).

Every strategy is exact there, each limit's keys share one slot through a hash tag, the
dialer runs on ``REDIS_URL=redis://host:port?cluster=true``, and a master killed mid-run
costs fail-open decisions during the failover and nothing after it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing

import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from cps_limiter import (
    AdaptivePolicy,
    AsyncLimiter,
    Concurrency,
    Decision,
    FixedWindow,
    Limiter,
    PacedWindow,
    Rule,
)
from dialer_lambda import Dialer
from loadtest.simulate.pace import max_in_window
from loadtest.worker_stub import WorkerStub
from tests.support.cluster import LocalCluster, local_cluster
from tests.support.dialer import FakeContext, MakeDialer, dialer_for, make_batch
from tests.support.faults import DECISION_BOUND, RECOVERY_BOUND
from tests.support.load import LIMIT, LONG, STRATEGY_NAMES, Load, async_hammer, hammer, strategy
from tests.support.measure import Measurement, Report
from tests.support.paced import US, next_free
from tests.support.redelivery import (
    BATCH,
    TASKS,
    accounted,
    dialed,
    invoke_concurrently,
    overlapping_batches,
)

pytestmark = pytest.mark.usefixtures("no_limiter_spans")

FAILOVER_TIMEOUT = 15.0
POLL_SECONDS = 0.01
LOAD_SCOPES = 200


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as started:
        yield started


@pytest.fixture
def prefix() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def keys_by_node(cluster: LocalCluster, pattern: str) -> dict[int, list[str]]:
    """The keys matching ``pattern`` on each running node that holds any, by port."""
    found: dict[int, list[str]] = {}
    for node in cluster.running():
        client = redis.Redis(port=node.port, decode_responses=True)
        if client.info("replication")["role"] == "master":
            keys = sorted(str(key) for key in client.keys(pattern))
            if keys:
                found[node.port] = keys
        client.close()
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_is_exact_on_the_cluster(
    cluster: LocalCluster, prefix: str, name: str
) -> None:
    with Limiter.from_url(cluster.url, strategy(name, LIMIT), prefix=prefix) as limiter:
        decisions = hammer(lambda: limiter.acquire())
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("scope", [None, "tenant-7"])
def test_the_keys_of_one_limit_share_the_slot_of_its_prefix(
    cluster: LocalCluster, prefix: str, name: str, scope: str | None
) -> None:
    with Limiter.from_url(cluster.url, strategy(name, LIMIT), prefix=prefix) as limiter:
        limiter.acquire(scope)
        base = f"{{{prefix}}}" if scope is None else f"{{{prefix}}}:{scope}"
        assert limiter.key_base(scope) == base
    found = keys_by_node(cluster, f"{base}*")
    (keys,) = found.values()  # all on one master
    assert keys
    assert {key_slot(key.encode()) for key in keys} == {key_slot(prefix.encode())}


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_scope_is_counted_on_the_same_keys_by_acquire_and_acquire_all_on_the_cluster(
    cluster: LocalCluster, prefix: str, name: str
) -> None:
    with Limiter.from_url(cluster.url, strategy(name, LIMIT), prefix=prefix) as limiter:
        limiter.acquire("tenant-7", permits=2)
        limiter.acquire_all([Rule(limiter.strategy, "tenant-7")], 3)
        assert limiter.peek("tenant-7").remaining == LIMIT - 5
    assert not keys_by_node(cluster, f"{{{prefix}:tenant-7}}*")


@pytest.mark.slow
def test_the_fixed_windows_counter_is_named_after_its_window_inside_the_hash_tag(
    cluster: LocalCluster, prefix: str
) -> None:
    with Limiter.from_url(cluster.url, strategy("fixed", LIMIT), prefix=prefix) as limiter:
        limiter.acquire(permits=3)
        now = int(limiter.client.time()[0])
    (keys,) = keys_by_node(cluster, f"{{{prefix}}}:*").values()
    counter = f"{{{prefix}}}:{now - now % LONG}"
    assert counter in keys
    client = RedisCluster.from_url(cluster.url.split("?")[0])
    assert client.get(counter) == b"3"
    client.close()


@pytest.mark.slow
def test_the_paced_windows_counters_and_pacer_share_the_slot_of_its_hash_tag(
    cluster: LocalCluster, prefix: str
) -> None:
    with Limiter.from_url(cluster.url, PacedWindow(LIMIT), prefix=prefix) as limiter:
        decision = limiter.acquire(permits=30, max_wait=1.0)  # 0.725 s of moments
    (keys,) = keys_by_node(cluster, f"{{{prefix}}}*").values()  # all on one master
    counters = [key for key in keys if key != f"{{{prefix}}}:pace"]
    client = RedisCluster.from_url(cluster.url.split("?")[0])
    counts = [int(client.get(key)) for key in counters]
    client.close()
    assert (decision.allowed, decision.granted, decision.fail_open) == (True, 30, False)
    assert f"{{{prefix}}}:pace" in keys
    assert all(key.removeprefix(f"{{{prefix}}}:").isdigit() for key in counters)
    assert sum(counts) == 30
    assert {key_slot(key.encode()) for key in keys} == {key_slot(prefix.encode())}


def test_the_cap_and_health_report_on_the_cluster_share_the_limits_slot_and_set_its_limit(
    cluster: LocalCluster, prefix: str
) -> None:
    with Limiter.from_url(
        cluster.url, FixedWindow(100), prefix=prefix, adaptive=AdaptivePolicy()
    ) as limiter:
        limiter.set_cap(40, ttl=600)
        limiter.report_health(cpu=85.0)
        assert limiter.acquire(permits=1000, partial=True).granted == 20
        assert limiter.cap()[0] == 40
    found = keys_by_node(cluster, f"{{{prefix}}}*")
    (keys,) = found.values()  # the counter and the adaptive hash, on one master
    assert f"{{{prefix}}}:adaptive" in keys
    assert {key_slot(key.encode()) for key in keys} == {key_slot(prefix.encode())}


@pytest.mark.slow
def test_the_paced_window_on_the_cluster_counts_every_permit_and_spaces_them(
    cluster: LocalCluster, prefix: str
) -> None:
    spacing_us = US // LIMIT
    with Limiter.from_url(cluster.url, PacedWindow(LIMIT), prefix=prefix) as limiter:
        seconds, micros = limiter.client.time()
        started = int(seconds) * US + int(micros)
        # Without max_wait nothing sleeps: the burst is over long before a counter expires.
        decisions = hammer(lambda: limiter.acquire())
        free = next_free(limiter.client.get(f"{{{prefix}}}:pace"))
        counts = [
            int(limiter.client.get(f"{{{prefix}}}:{second}") or 0)
            for second in range(started // US, (free or 0) // US + 1)
        ]
    granted = sum(d.granted for d in decisions)
    assert not any(d.fail_open for d in decisions)
    assert free is not None
    assert 0 < granted <= (free - started) // spacing_us
    assert sum(counts) == granted
    assert max(counts) <= LIMIT


@pytest.mark.slow
def test_a_limiter_takes_a_redis_cluster_client_the_caller_built(
    cluster: LocalCluster, prefix: str
) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.nodes[1].port)
    limiter = Limiter(client, strategy("token", LIMIT), prefix=prefix)
    decisions = hammer(lambda: limiter.acquire())
    assert sum(d.granted for d in decisions) == LIMIT
    assert limiter.client is client
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGY_NAMES)
async def test_the_async_limiter_is_exact_on_the_cluster(
    cluster: LocalCluster, prefix: str, name: str
) -> None:
    limiter = AsyncLimiter.from_url(cluster.url, strategy(name, LIMIT), prefix=prefix)
    decisions = await async_hammer(limiter.acquire)
    await limiter.aclose()
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


@pytest.mark.slow
def test_the_keys_of_one_decision_over_several_rules_share_one_slot(
    cluster: LocalCluster, prefix: str
) -> None:
    trunk = PacedWindow(LIMIT)
    rules = [
        Rule(trunk),
        Rule(FixedWindow(LIMIT), "campaign:a"),
        Rule(Concurrency(5, ttl=60), "campaign:a"),
    ]
    with Limiter.from_url(cluster.url, trunk, prefix=prefix) as limiter:
        decision = limiter.acquire_all(rules, 2, max_wait=1.0, leases=["call-1", "call-2"])
        assert decision.granted == 2
        assert limiter.lease_key("campaign:a") == f"{{{prefix}}}:campaign:a:leases"
    (keys,) = keys_by_node(cluster, f"{{{prefix}}}*").values()
    assert len(keys) >= 4  # the trunk's counter and pacer, the campaign's counter and leases
    assert {key_slot(key.encode()) for key in keys} == {key_slot(prefix.encode())}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_decision_over_several_rules_is_exact_on_the_cluster(
    cluster: LocalCluster, prefix: str, kind: str
) -> None:
    trunk = FixedWindow(LIMIT, window=LONG)
    campaigns = {"campaign:a": LIMIT // 2 + 3, "campaign:b": LIMIT // 2 + 3}
    taken: dict[str, list[str]] = {scope: [] for scope in campaigns}
    count = itertools.count()

    def rules_for(n: int) -> tuple[str, list[Rule]]:
        scope = sorted(campaigns)[n % 2]
        return scope, [Rule(trunk), Rule(Concurrency(campaigns[scope], ttl=LONG), scope)]

    if kind == "sync":
        with Limiter.from_url(cluster.url, trunk, prefix=prefix) as limiter:

            def one() -> Decision:
                n = next(count)
                scope, rules = rules_for(n)
                decision = limiter.acquire_all(rules, 1, leases=[f"call-{n}"])
                taken[scope] += decision.leases
                return decision

            decisions = hammer(one)
            held = {scope: limiter.leases_held(scope)[0] for scope in campaigns}
    else:

        async def run() -> tuple[list[Decision], dict[str, int]]:
            limiter = AsyncLimiter.from_url(cluster.url, trunk, prefix=prefix)

            async def one() -> Decision:
                n = next(count)
                scope, rules = rules_for(n)
                decision = await limiter.acquire_all(rules, 1, leases=[f"call-{n}"])
                taken[scope] += decision.leases
                return decision

            found = await async_hammer(one)
            live = {scope: (await limiter.leases_held(scope))[0] for scope in campaigns}
            await limiter.aclose()
            return found, live

        decisions, held = asyncio.run(run())
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT
    for scope, limit in campaigns.items():
        assert held[scope] == len(taken[scope]) <= limit


# -- the dialer on the cluster -----------------------------------------------------------------


@pytest.fixture
def on_cluster(cluster: LocalCluster, stub: WorkerStub, prefix: str) -> Iterator[MakeDialer]:
    """``on_cluster(**env)``: a dialer on ``REDIS_URL=...?cluster=true`` against the stub."""
    defaults = {
        "MAX_CPS": "5",
        "RATE_LIMIT_MAX_WAIT_SECONDS": "0",
        "CPS_KEY_PREFIX": f"{prefix}-cps",
        "IDEMPOTENCY_KEY_PREFIX": f"{prefix}-claim",
        "DIAL_TIMEOUT_SECONDS": "5",
    }
    factory = MakeDialer(stub.url, cluster.url, defaults)
    yield factory
    factory.close()


@pytest.fixture
def cluster_dialer(on_cluster: MakeDialer) -> Dialer:
    """A dialer on the cluster at 5 calls per second, in fixed windows: these tests count
    what one window lets through at once."""
    return on_cluster(CPS_STRATEGY="fixed")


@pytest.mark.slow
def test_a_full_campaign_on_the_cluster_gets_its_limit_and_its_leases_share_the_trunks_slot(
    on_cluster: MakeDialer, stub: WorkerStub, cluster: LocalCluster, prefix: str
) -> None:
    dialer = on_cluster(MAX_CPS="50", RATE_LIMIT_MAX_WAIT_SECONDS="1", WORKER_FREES_LEASES="true")
    batch = make_batch(8)
    for task in batch:
        task["campaign"]["config"]["maxConcurrentCalls"] = 5
    result = dialer.process(batch, FakeContext())
    assert (result["successful"], result["rateLimited"]) == (5, 3)
    key = f"{{{prefix}-cps}}:campaign:campaign-123:leases"
    assert dialer.limiter.lease_key("campaign:campaign-123") == key
    assert dialer.limiter.leases_held("campaign:campaign-123")[0] == 5
    assert key_slot(key.encode()) == key_slot(dialer.limiter.key_base().encode())


@pytest.mark.slow
def test_the_dialer_on_a_cluster_url_paces_a_batch_at_max_cps(
    cluster_dialer: Dialer, stub: WorkerStub
) -> None:
    result = cluster_dialer.process(make_batch(10), FakeContext())
    assert (result["successful"], result["rateLimited"]) == (5, 5)
    assert len(stub.calls) == 5


@pytest.mark.slow
def test_the_default_dialer_on_a_cluster_paces_a_batch_to_max_cps_in_any_second(
    on_cluster: MakeDialer, stub: WorkerStub, cluster: LocalCluster, prefix: str
) -> None:
    dialer = on_cluster(RATE_LIMIT_MAX_WAIT_SECONDS="3")

    result = dialer.process(make_batch(10), FakeContext())

    assert result["successful"] == 10
    busiest, _ = max_in_window([call.monotonic for call in stub.calls], 1.0)
    assert busiest <= 5
    counters = keys_by_node(cluster, f"{{{prefix}-cps}}:[0-9]*")
    [(port, keys)] = counters.items()  # one slot: the hash tag
    node = redis.Redis(port=port, decode_responses=True)
    assert max(int(node.get(key) or 0) for key in keys) <= 5
    node.close()


@pytest.mark.slow
def test_the_dialer_on_a_cluster_dials_a_redelivered_batch_once(
    cluster_dialer: Dialer, stub: WorkerStub
) -> None:
    batch = make_batch(5)
    first = cluster_dialer.process(batch, FakeContext())
    again = cluster_dialer.process(batch, FakeContext())
    assert (first["successful"], again["duplicates"]) == (5, 5)
    assert len(stub.calls) == 5


@pytest.mark.slow
def test_the_dialers_claims_spread_over_the_clusters_slots(
    cluster_dialer: Dialer, cluster: LocalCluster, prefix: str
) -> None:
    cluster_dialer.process(make_batch(10), FakeContext())
    claims = keys_by_node(cluster, f"{prefix}-claim:*")
    assert sum(len(keys) for keys in claims.values()) == 5
    assert len({key_slot(k.encode()) for keys in claims.values() for k in keys}) > 1


@pytest.mark.slow
def test_twenty_concurrent_overlapping_redeliveries_on_the_cluster_dial_each_task_once(
    on_cluster: MakeDialer, stub: WorkerStub
) -> None:
    dialer = on_cluster(MAX_CPS="1000", RATE_LIMIT_MAX_WAIT_SECONDS="2")
    stub.set_behaviour(delay_ms=50)
    results = invoke_concurrently(dialer, overlapping_batches())
    counts = dialed(stub)
    assert all(accounted(r, BATCH) for r in results)
    assert sum(r["successful"] for r in results) == TASKS
    assert len(counts) == TASKS
    assert set(counts.values()) == {1}


# -- construction during an outage, and a failover ---------------------------------------------


class Subject:
    """A Limiter, or an AsyncLimiter driven from synchronous code, on one URL."""

    def __init__(self, kind: str, url: str, prefix: str) -> None:
        self._runner = asyncio.Runner() if kind == "async" else None
        made = strategy("fixed", LIMIT)
        self.limiter: Limiter | AsyncLimiter = (
            Limiter.from_url(url, made, prefix=prefix)
            if self._runner is None
            else AsyncLimiter.from_url(url, made, prefix=prefix)
        )

    def acquire(self, scope: str | None = None) -> Decision:
        if isinstance(self.limiter, Limiter):
            return self.limiter.acquire(scope)
        assert self._runner is not None
        return self._runner.run(self.limiter.acquire(scope))

    def close(self) -> None:
        if isinstance(self.limiter, Limiter):
            self.limiter.close()
            return
        assert self._runner is not None
        self._runner.run(self.limiter.aclose())
        self._runner.close()


def timed(call: Callable[[], Decision]) -> tuple[float, Decision]:
    started = time.monotonic()
    decision = call()
    return time.monotonic() - started, decision


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_limiter_made_while_the_cluster_is_down_fails_open_then_decides_once_it_is_up(
    prefix: str, kind: str
) -> None:
    down = LocalCluster()
    try:
        subject = Subject(kind, down.url, prefix)
        seconds, decision = timed(subject.acquire)
        down.start()
        up = time.monotonic()
        while subject.acquire("probe").fail_open and time.monotonic() - up <= RECOVERY_BOUND:
            time.sleep(POLL_SECONDS)
        decisions = [subject.acquire("after") for _ in range(LIMIT + 5)]
        subject.close()
    finally:
        down.cleanup()
    assert decision.fail_open
    assert seconds <= DECISION_BOUND
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_with_every_node_down_decisions_fail_open_and_nothing_escapes(
    prefix: str, kind: str
) -> None:
    with local_cluster() as own:
        subject = Subject(kind, own.url, prefix)
        assert not subject.acquire().fail_open
        for node in own.nodes:
            node.kill()
        timed_decisions = [timed(subject.acquire) for _ in range(10)]
        subject.close()
    assert all(d.fail_open for _, d in timed_decisions)
    assert max(seconds for seconds, _ in timed_decisions) <= DECISION_BOUND


@pytest.mark.slow
def test_with_every_node_down_the_dialer_still_dials_and_raises_nothing(prefix: str) -> None:
    with local_cluster() as own, WorkerStub() as stub:
        env = {"REDIS_URL": own.url, "NODE_WORKER_URL": stub.url}
        with closing(dialer_for(env)) as dialer:
            assert dialer.process(make_batch(2), FakeContext())["successful"] == 2
            for node in own.nodes:
                node.kill()
            result = dialer.process(make_batch(3), FakeContext())
    assert result["successful"] == 3  # fail open, as the seed asks


def scopes_served_by(limiter: Limiter, cluster: LocalCluster, port: int, count: int) -> list[str]:
    """Scopes whose keys live on the master at ``port``."""
    scopes: list[str] = []
    for index in itertools.count():
        scope = f"s{index}"
        if cluster.master_of(limiter.key_base(scope)).port == port:
            scopes.append(scope)
            if len(scopes) == count:
                return scopes
    raise AssertionError("unreachable")


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_master_killed_mid_run_fails_open_during_the_failover_and_is_exact_after_it(
    prefix: str, name: str, fault_report: Report
) -> None:
    with local_cluster() as own:
        limiter = Limiter.from_url(own.url, strategy(name, LIMIT), prefix=prefix)
        doomed = own.master_of(limiter.key_base())
        scopes = itertools.cycle(scopes_served_by(limiter, own, doomed.port, LOAD_SCOPES))
        with Load(lambda: limiter.acquire(next(scopes))) as load:
            load.wait_for(lambda s: s.exact)
            killed = time.monotonic()
            doomed.kill()
            own.wait_for_new_master(limiter.key_base(), doomed, FAILOVER_TIMEOUT)
            promoted = time.monotonic()
            recovered = load.wait_for(lambda s: s.started >= promoted and s.exact)
        decisions = hammer(lambda: limiter.acquire())
        limiter.close()
    during = {"exact" if s.exact else "fail_open" for s in load.samples if s.started >= killed}
    worst = load.worst()
    fault_report.add(
        Measurement(
            "limiter", "cluster_master_killed", f"sync-{name}-open",
            round(worst * 1000, 1), round((recovered.ended - promoted) * 1000, 1),
            len(load.samples), sum(1 for s in load.samples if not s.exact),
            {"failover_ms": round((promoted - killed) * 1000)},
        )
    )  # fmt: skip
    assert load.errors() == []
    assert worst <= DECISION_BOUND
    assert during == {"exact", "fail_open"}
    assert recovered.ended - promoted <= RECOVERY_BOUND
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT
