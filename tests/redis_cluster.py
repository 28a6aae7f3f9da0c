"""A throwaway Redis Cluster on loopback for tests: three masters, one replica each, and the
session fixture that runs one.

Six `redis-server --cluster-enabled yes` (each a `RedisServer`, so each on a free port in
its own temporary directory, nothing persisted), joined by `redis-cli --cluster create
--cluster-replicas 1`, then polled until every node says `cluster_state:ok` and agrees on
who serves every slot. `--cluster-node-timeout 1000` keeps a failover to about a second.

`fail_over(slot)` promotes the replica of the master serving `slot` (`CLUSTER FAILOVER` on
the replica) and waits until every node knows the new master; `kill_master(slot)` stops
that master as a crash would and waits for its replica to take over. The state tests run
them in the middle of their traffic.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Self

import pytest

from tests.redis_server import MISSING, RedisServer
from tests.server_process import free_port

MASTERS = 3
NODE_TIMEOUT_MS = 1000
READY_S = 20.0
REPLICATED = ("--cluster-replicas", "1", "--cluster-yes")


class ClusterNodeServer(RedisServer):
    """One node of the cluster: a `RedisServer` with cluster mode on."""

    name = "redis-server (cluster node)"

    def __init__(self) -> None:
        super().__init__()
        # The bus port is named, not left at port + 10000: a free port above 55535 would
        # put that past 65535, and the node would exit at once. A restart on the same port
        # (kill_master) keeps it; a retry on another port takes another.
        self.bus_port = 0
        self._bus_for = 0

    def _command(self, port: int) -> list[str]:
        if self._bus_for != port:
            self.bus_port, self._bus_for = free_port(), port
        return [
            *super()._command(port),
            *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
            *("--cluster-port", str(self.bus_port)),
            *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            # A master whose replica is failing over, or a slot being moved, must not
            # make the whole cluster refuse keys it still serves.
            *("--cluster-require-full-coverage", "no"),
        ]


@dataclass(frozen=True, slots=True)
class Node:
    """A line of `CLUSTER NODES`: id, address, role, and the slot ranges a master serves."""

    id: str
    port: int
    master: bool
    master_id: str | None  # a replica's master
    slots: tuple[tuple[int, int], ...]

    def serves(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def command(port: int, *args: str) -> str:
    """One command on one node over RESP, its reply as text (`redis-cli` without a shell)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        sock.sendall(request.encode())
        return _read_reply(sock.makefile("rb"))


def _read_reply(stream: BinaryIO) -> str:
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b":"):
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        size = int(rest)
        return "" if size < 0 else stream.read(size + 2)[:-2].decode()
    if kind == b"*":
        return "\n".join(_read_reply(stream) for _ in range(max(0, int(rest))))
    raise RuntimeError(f"unexpected reply {line!r}")


class RedisCluster:
    """`with RedisCluster() as cluster:` gives `cluster.url` (`redis+cluster://` to a master)
    and `cluster.nodes` (`host:port` of each master); every node stops on exit."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise FileNotFoundError(MISSING)
        self.servers: list[ClusterNodeServer] = []

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.masters()[0].port}"

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.masters()]

    def start(self) -> Self:
        try:
            for _ in range(MASTERS * 2):
                self.servers.append(ClusterNodeServer().start())
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, *REPLICATED],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.__exit__(None, None, None)
        self.servers.clear()

    # --- what the cluster looks like ----------------------------------------------------
    def topology(self, port: int | None = None) -> list[Node]:
        """`CLUSTER NODES` as one node (the first that answers) sees it."""
        for asked in [port] if port is not None else self.ports:
            try:
                text = command(asked, "CLUSTER", "NODES")
            except OSError:
                continue
            return [_node(line) for line in text.splitlines() if line.strip()]
        raise RuntimeError("no cluster node answers")

    def masters(self) -> list[Node]:
        return [node for node in self.topology() if node.master]

    def keyslot(self, key: str) -> int:
        return int(command(self.masters()[0].port, "CLUSTER", "KEYSLOT", key))

    def master_of(self, slot: int) -> Node:
        return next(node for node in self.masters() if node.serves(slot))

    def wait_ok(self, timeout_s: float = READY_S) -> None:
        """Until every running node says `cluster_state:ok` and all see the same masters,
        each with a replica, serving all 16384 slots."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._agreed():
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis cluster did not become ready")

    def _agreed(self) -> bool:
        views = []
        for port in self.ports:
            try:
                if "cluster_state:ok" not in command(port, "CLUSTER", "INFO"):
                    return False
                views.append(self.topology(port))
            except (OSError, RuntimeError):
                return False
        seen = {tuple(sorted((n.port, n.slots) for n in view if n.master)) for view in views}
        if len(seen) != 1:
            return False
        masters = [n for n in views[0] if n.master and n.slots]
        covered = sum(hi - lo + 1 for n in masters for lo, hi in n.slots)
        replicated = {n.master_id for n in views[0] if not n.master}
        return covered == 16384 and all(n.id in replicated for n in masters)

    # --- failures -----------------------------------------------------------------------
    def fail_over(self, slot: int, timeout_s: float = READY_S) -> tuple[int, int]:
        """Promote the replica of the master serving `slot` (`CLUSTER FAILOVER` on it, the
        old master agreeing) and wait until every node sees it. Returns (old, new) ports."""
        old = self.master_of(slot)
        replica = next(n for n in self.topology() if n.master_id == old.id)
        command(replica.port, "CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.master_of(slot).port == replica.port and self._agreed():
                    return old.port, replica.port
            except (OSError, RuntimeError, StopIteration):
                pass
            time.sleep(0.05)
        raise RuntimeError("the failover did not complete")

    def kill_master(self, slot: int, timeout_s: float = READY_S) -> tuple[int, int]:
        """Stop the master serving `slot` outright, as a crash would; wait until its
        replica has taken over (after `--cluster-node-timeout`), then start the old one
        again on its port, where it rejoins as the new master's replica, and wait until
        the cluster is whole. Returns (old, new) ports."""
        old = self.master_of(slot)
        replica = next(n for n in self.topology() if n.master_id == old.id)
        dead = next(server for server in self.servers if server.port == old.port)
        dead.stop()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.master_of(slot).port == replica.port:
                    break
            except (OSError, RuntimeError, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not take over")
            time.sleep(0.05)
        dead.start(port=old.port)
        self.wait_ok(timeout_s)
        return old.port, replica.port

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _node(line: str) -> Node:
    # <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot> <slot> ...
    fields = line.split()
    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
    flags = fields[2].split(",")
    slots = []
    for part in fields[8:]:
        if part.startswith("["):
            continue  # a slot being migrated or imported
        lo, _, hi = part.partition("-")
        slots.append((int(lo), int(hi or lo)))
    return Node(
        id=fields[0],
        port=port,
        master="master" in flags and "fail" not in flags,
        master_id=None if fields[3] == "-" else fields[3],
        slots=tuple(slots),
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master cluster started once for the session. Fails (never skips) without
    redis-server: a skipped cluster suite would pass CI while testing nothing."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail(MISSING, pytrace=False)
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """`redis+cluster://` to one master: the client finds the others."""
    return redis_cluster.url
