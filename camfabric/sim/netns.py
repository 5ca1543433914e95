"""Hosts for fault tests: network namespaces joined to this one by a veth pair.

    with NetnsHost.create() as host:          # host.address: its side; host.peer: ours
        proc = host.spawn([python, "-m", ...])
        host.partition(); host.heal()          # every packet dropped, then flowing again
        host.silence(); host.unsilence()       # the same, our link up (SYNs sent into nothing)
        host.power_cut()                       # link gone, no FIN, its processes killed
        host.restore()                         # a fresh namespace, same addresses

Each run takes unique names and an unused /30 in 10.0.0.0/8; traffic goes only between this
namespace and the test's own. `available()` says why namespaces cannot be used here (not root,
no `ip`, or the kernel refusing), so tests skip with that reason.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Sequence

_counter = itertools.count()


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done


def available() -> str:
    """'' when this machine lets us create namespaces, else the reason it does not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"cfprobe{os.getpid()}"
    done = _ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"`ip netns add` refused: {done.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return ""


def _free_subnet() -> tuple[str, str]:
    used = _ip("-o", "addr").stdout
    for _ in range(200):
        a, b, c = random.randrange(100, 250), random.randrange(0, 256), random.randrange(0, 64) * 4
        prefix = f"10.{a}.{b}."
        if f"{prefix}{c + 1}/" not in used and f"{prefix}{c + 2}/" not in used:
            return f"{prefix}{c + 1}", f"{prefix}{c + 2}"
    raise RuntimeError("no free /30 found in 10.0.0.0/8")


class NetnsHost:
    """One simulated host: a namespace with an address, reachable from here over a veth."""

    def __init__(self) -> None:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.netns = f"cf{tag}"
        self.veth = f"cfv{tag}"       # our end (at most 15 characters)
        self.veth_peer = f"cfp{tag}"  # its end
        self.peer, self.address = _free_subnet()
        self._procs: list[subprocess.Popen] = []

    @classmethod
    def create(cls) -> NetnsHost:
        return cls().restore()

    def restore(self) -> NetnsHost:
        """Bring up the namespace and its link with the same addresses (a host powering on)."""
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", self.veth_peer)
            _ip("link", "set", self.veth_peer, "netns", self.netns)
            _ip("addr", "add", f"{self.peer}/30", "dev", self.veth)
            _ip("link", "set", self.veth, "up")
            _ip("addr", "add", f"{self.address}/30", "dev", self.veth_peer, netns=self.netns)
            _ip("link", "set", self.veth_peer, "up", netns=self.netns)
            _ip("link", "set", "lo", "up", netns=self.netns)
        except Exception:
            self.destroy()
            raise
        return self

    def spawn(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a process inside the namespace."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def partition(self) -> None:
        """Drop every packet both ways: our end of the link goes down (no FIN, no RST; the
        host behind it and its connection state stay as they were)."""
        _ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        """End a partition: the link comes up and its route with it."""
        _ip("link", "set", self.veth, "up")

    def silence(self) -> None:
        """Packets to and from the host vanish while both ends of the link stay up (a router
        or Wi-Fi that stops passing traffic): the host loses its route back to us, so what we
        send reaches it and is never answered, and a connection attempt sends its SYN into
        nothing and waits on TCP's retransmits, as it would in the field."""
        _ip("route", "del", f"{self.peer}/32", netns=self.netns, check=False)
        _ip("route", "add", "blackhole", f"{self.peer}/32", netns=self.netns)

    def unsilence(self, new_mac: bool = False) -> None:
        """Traffic passes again; with `new_mac`, the host comes back with another MAC address
        (another network card, or a randomised one) while our neighbour entry still holds
        the old one."""
        if new_mac:
            # A host announces its address when it comes up (a gratuitous ARP: the DHCP client or
            # the kernel's arp_notify), and an existing neighbour entry takes the new MAC from it.
            # Without one our entry keeps the old MAC until the kernel's own neighbour timers
            # expire (up to about 50 s), whatever the application does.
            subprocess.run(["ip", "netns", "exec", self.netns, "sysctl", "-qw",
                            f"net.ipv4.conf.{self.veth_peer}.arp_notify=1"], check=True)
            mac = "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))
            _ip("link", "set", self.veth_peer, "address", mac, netns=self.netns)
        _ip("route", "del", "blackhole", f"{self.peer}/32", netns=self.netns, check=False)

    def power_cut(self) -> None:
        """The host loses power: its link vanishes first (no FIN or RST can leave), then its
        processes die and its kernel state (every TCP connection) is gone."""
        _ip("link", "del", self.veth, check=False)
        self._kill()
        _ip("netns", "del", self.netns, check=False)

    def _kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        self._procs.clear()

    def destroy(self) -> None:
        """Remove everything this host made; safe to call twice."""
        self._kill()
        _ip("link", "del", self.veth, check=False)
        _ip("netns", "del", self.netns, check=False)

    def __enter__(self) -> NetnsHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
