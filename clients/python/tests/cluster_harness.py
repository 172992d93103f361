"""A real Redis Cluster for the tests: redis-server --cluster-enabled on free ports, joined
with redis-cli --cluster create, resharded and failed over with real cluster commands."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import wait_for


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A port P with P and its cluster bus port P + 10000 both free, both below Linux's
    ephemeral range (32768 and up), where ports picked by binding port 0, and outgoing
    connections, would take them now and then: a node whose bus port is taken never starts."""
    for _ in range(1000):
        port = random.randint(20000, 22767)
        if port not in taken and _bindable(port) and _bindable(port + 10000):
            taken.add(port)
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_major() -> int:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return int(out.split("v=", 1)[1].split(".", 1)[0])


@dataclass
class Node:
    port: int
    dir: str
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 10) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=timeout)
        return out.stdout.strip()

    def alive(self) -> bool:
        """Running and answering (not killed, not stopped)."""
        return self.proc is not None and self.proc.poll() is None and not self.stopped

    def stop(self) -> None:
        """SIGSTOP: hung, its connections open and silent."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False


class RedisCluster:
    """`masters` masters with `replicas` replicas each; `node_timeout` is cluster-node-timeout
    in ms (short, so a killed master is noticed quickly)."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout: int = 1000) -> None:
        taken: set[int] = set()
        self.node_timeout = node_timeout
        self.nodes = [Node(free_cluster_port(taken), tempfile.mkdtemp(prefix="sluice-cluster-"))
                      for _ in range(masters * (1 + replicas))]
        try:
            for node in self.nodes:
                self._start(node)
            addrs = [n.addr for n in self.nodes]
            out = subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas",
                                  str(replicas), "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
            self.wait_ok()
        except BaseException:
            self.close()
            raise

    def _start(self, node: Node) -> None:
        args = ["redis-server", "--port", str(node.port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout),
                "--save", "", "--appendonly", "no", "--dir", node.dir, "--repl-diskless-sync-delay", "0",
                "--logfile", str(Path(node.dir) / "redis.log")]
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: node.cli("PING") == "PONG", 10, f"redis-server on {node.port}")

    @property
    def url(self) -> str:
        """The seed nodes as the SDK takes them (two of them: any node will do)."""
        return "redis+cluster://" + ",".join(n.addr for n in self.nodes[:2])

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive()]

    def node(self, addr: str) -> Node:
        return next(n for n in self.nodes if n.addr == addr)

    def slot_owners(self, via: Node | None = None) -> dict[int, str]:
        """slot -> master address, as `via` (or the first live node) sees it."""
        via = via or self.live()[0]
        owners: dict[int, str] = {}
        for line in via.cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            addr = parts[1].split("@")[0]
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a slot being migrated / imported
                lo, _, hi = spec.partition("-")
                for slot in range(int(lo), int(hi or lo) + 1):
                    owners[slot] = addr
        return owners

    def masters(self) -> list[str]:
        return sorted(set(self.slot_owners().values()))

    def agreed(self) -> bool:
        """Every live node reports cluster_state:ok and the same slot owners for all slots, and
        every replica is in sync with its master."""
        views = []
        for n in self.live():
            if "cluster_state:ok" not in n.cli("CLUSTER", "INFO"):
                return False
            info = n.cli("INFO", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
            views.append(self.slot_owners(n))
        return len(views[0]) == 16384 and all(v == views[0] for v in views)

    def wait_ok(self, timeout: float = 30) -> None:
        wait_for(self.agreed, timeout, "cluster_state:ok with one view of the slots on every node", every=0.1)

    def move_slot(self, slot: int, target: str) -> int:
        """Move `slot` to master `target` the way redis-cli --cluster reshard does. Returns the
        number of keys moved."""
        source, dest = self.begin_move(slot, target)
        moved = self.migrate_keys(slot, source, dest)
        self.finish_move(slot, dest)
        return moved

    def begin_move(self, slot: int, target: str) -> tuple[Node, Node]:
        """CLUSTER SETSLOT IMPORTING on the target, MIGRATING on the owner."""
        source, dest = self.node(self.slot_owners()[slot]), self.node(target)
        src_id, dst_id = source.cli("CLUSTER", "MYID"), dest.cli("CLUSTER", "MYID")
        assert dest.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id) == "OK"
        assert source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id) == "OK"
        return source, dest

    def migrate_keys(self, slot: int, source: Node, dest: Node) -> int:
        moved = 0
        while True:
            keys = source.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                return moved
            out = source.cli("MIGRATE", "127.0.0.1", str(dest.port), "", "0", "5000", "KEYS", *keys)
            assert out in ("OK", "NOKEY"), f"MIGRATE: {out}"
            moved += len(keys)

    def finish_move(self, slot: int, dest: Node) -> None:
        """SETSLOT NODE on the target, then on every other master (the owner among them)."""
        dst_id = dest.cli("CLUSTER", "MYID")
        for node in [dest] + [self.node(m) for m in self.masters() if m != dest.addr]:
            assert node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id) == "OK"
        self.wait_ok()

    def replica_of(self, master: str) -> Node:
        master_id = self.node(master).cli("CLUSTER", "MYID")
        for n in self.live():
            me = next(line.split() for line in n.cli("CLUSTER", "NODES").splitlines() if "myself" in line.split()[2])
            if "slave" in me[2] and me[3] == master_id:
                return n
        raise LookupError(f"no replica of {master}")

    def kill(self, addr: str) -> None:
        node = self.node(addr)
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()

    def failover_killed(self, replica: Node, timeout: float = 30) -> None:
        """After its master was killed: promote `replica` (CLUSTER FAILOVER FORCE), then wait
        until the live nodes agree again."""
        def promoted() -> bool:
            if replica.cli("ROLE").split()[:1] == ["master"]:
                return True
            replica.cli("CLUSTER", "FAILOVER", "FORCE")
            return False
        wait_for(promoted, timeout, f"{replica.addr} promoted", every=0.5)
        self.wait_ok(timeout)

    def restart_all(self) -> None:
        """Every node killed, then started again on its port and directory: the cluster forms
        again from nodes.conf, without its data (no persistence)."""
        for node in self.nodes:
            if node.alive():
                assert node.proc is not None
                node.proc.kill()
                node.proc.wait()
        for node in self.nodes:
            self._start(node)
        self.wait_ok()

    def close(self) -> None:
        for node in self.nodes:
            if node.stopped:
                node.cont()
            if node.alive():
                assert node.proc is not None
                node.proc.kill()
                node.proc.wait()
            shutil.rmtree(node.dir, ignore_errors=True)
