"""A network namespace of the suite's own, joined to the host by veth pairs, to partition one worker.

Two links: ``data`` carries the worker's registry and broker traffic and is
the one that is cut; ``evidence`` carries what the devices record and is
never cut, so the evidence of a partitioned worker is complete.  Addresses
are private (10.231/10.232.x.0/30) and exist only on these links.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from chaos.ledger import Ledger


class NetnsUnavailable(RuntimeError):
    """Namespaces or veth pairs cannot be made here (the scenario is skipped with this reason)."""


@dataclass(frozen=True)
class Link:
    host: str  # veth end on the host
    peer: str  # veth end inside the namespace
    host_ip: str
    peer_ip: str


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Partition:
    def __init__(self, ledger: Ledger, tag: int) -> None:
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the ip command (iproute2) is not installed")
        self.ledger = ledger
        self.ns = f"chaos{tag}"
        x = 20 + tag % 200
        self.data = Link(f"cd{tag}h", f"cd{tag}n", f"10.231.{x}.1", f"10.231.{x}.2")
        self.evidence = Link(f"ce{tag}h", f"ce{tag}n", f"10.232.{x}.1", f"10.232.{x}.2")
        self._entries: list[str] = []

    @property
    def prefix(self) -> list[str]:
        """Run a command inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.ns]

    def create(self) -> None:
        _ip("netns", "add", self.ns)
        self._entries.append(self.ledger.add("netns", name=self.ns))
        for link in (self.data, self.evidence):
            _ip("link", "add", link.host, "type", "veth", "peer", "name", link.peer)
            self._entries.append(self.ledger.add("link", name=link.host))
            _ip("link", "set", link.peer, "netns", self.ns)
            _ip("addr", "add", f"{link.host_ip}/30", "dev", link.host)
            _ip("link", "set", link.host, "up")
            _ip("-n", self.ns, "addr", "add", f"{link.peer_ip}/30", "dev", link.peer)
            _ip("-n", self.ns, "link", "set", link.peer, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Take the data link down: the worker's packets to Redis are dropped, its sockets hang."""
        _ip("link", "set", self.data.host, "down")

    def heal(self) -> None:
        _ip("link", "set", self.data.host, "up")

    def destroy(self) -> None:
        """Delete the namespace (its veth ends and their peers go with it) and any host end left."""
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        for link in (self.data, self.evidence):
            subprocess.run(["ip", "link", "del", link.host], capture_output=True, check=False)
        for entry in self._entries:
            self.ledger.release(entry)
        self._entries.clear()
