"""A Redis Cluster on loopback: six redis-server processes (three masters, three replicas)
joined by ``redis-cli --cluster create``, started and stopped by the tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from redis.cluster import key_slot

from loadtest.servers import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MASTERS = 3
NODES = MASTERS * 2
NODE_TIMEOUT_MS = 1000
"""Milliseconds before a silent master counts as failed: a failover takes about two of them."""
READY_TIMEOUT = 30.0
POLL_SECONDS = 0.05
BUS_PORT_OFFSET = 10_000
"""Each node also listens on its port + 10000 for the cluster bus."""
MAX_PORT = 65_535


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose bus port (port + 10000) exists and is free too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET <= MAX_PORT and _bindable(port + BUS_PORT_OFFSET):
            return port


def _node_args() -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        # A test cluster keeps serving the slots it still has while one master fails over.
        "--cluster-require-full-coverage", "no",
        # Replicas sync at once instead of waiting 5 s for others to share the transfer.
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip


def _info(server: RedisServer, section: str) -> dict[str, str]:
    """``CLUSTER INFO`` (section "cluster") or an ``INFO`` section of one node, as text."""
    client = redis.Redis(port=server.port, socket_timeout=1.0, decode_responses=True)
    try:
        raw = (
            client.execute_command("CLUSTER INFO") if section == "cluster" else client.info(section)
        )
    finally:
        client.close()
    return {str(key): str(value) for key, value in dict(raw).items()}


def _until(check: str, predicate: object, timeout: float = READY_TIMEOUT) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster: {check} not reached within {timeout}s")
        time.sleep(POLL_SECONDS)


@dataclass
class LocalCluster:
    """Six nodes on free ports; ``url`` is what the limiter and the dialer are given."""

    nodes: list[RedisServer] = field(
        default_factory=lambda: [
            RedisServer(port=cluster_port(), extra_args=_node_args()) for _ in range(NODES)
        ]
    )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}?cluster=true"

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        created = subprocess.run(
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", "1", "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        self.wait_until_healthy()
        return self

    def running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def wait_until_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        """Every running node sees the cluster as ok, with three masters each having a
        replica whose replication link is up (else a master's death could not fail over)."""

        def healthy() -> bool:
            if any(_info(node, "cluster").get("cluster_state") != "ok" for node in self.running()):
                return False
            roles = [_info(node, "replication") for node in self.running()]
            masters = [role for role in roles if role.get("role") == "master"]
            replicas = [role for role in roles if role.get("role") == "slave"]
            return (
                len(masters) == MASTERS
                and all(int(role.get("connected_slaves", "0")) >= 1 for role in masters)
                and all(role.get("master_link_status") == "up" for role in replicas)
            )

        _until("a healthy cluster", healthy, timeout)

    def master_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.running():
            client = redis.Redis(port=node.port, socket_timeout=1.0)
            try:
                for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
            finally:
                client.close()
        raise LookupError(f"no node serves slot {slot}")

    def wait_for_new_master(self, key: str, dead: RedisServer, timeout: float) -> RedisServer:
        """Wait until a live node serves ``key``'s slot instead of ``dead``; return it."""
        found: list[RedisServer] = []

        def promoted() -> bool:
            master = self.master_of(key)
            if master is dead or master.process is None:
                return False
            found.append(master)
            return True

        _until(f"a replica promoted for {key!r}", promoted, timeout)
        return found[-1]

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()
