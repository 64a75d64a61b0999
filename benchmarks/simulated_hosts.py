"""Several "hosts" on one machine: network namespaces with shaped links (root only).

Each host is a network namespace with one veth link to a bridge in the root
namespace, which plays the LAN switch; the root namespace itself is reachable on
the bridge's address. Both directions of every link are limited to `rate_mbit`
with a token bucket (tc tbf), so each host has its own uplink and downlink as on a
real network. (netem, for delay and loss, is not built into this machine's kernel.)

Everything made here is named with `prefix` and removed on exit, including what an
earlier run that was killed left behind.
"""

from __future__ import annotations

import subprocess

SUBNET = "10.77.0"


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _tc_rate(device: str, rate_mbit: float, namespace: str | None = None) -> None:
    # The bucket holds ~2 ms of traffic: bursts stay short, the average is the rate.
    burst = max(64 * 1024, int(rate_mbit * 1e6 / 8 * 0.002))
    argv = ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", f"{rate_mbit}mbit",
            "burst", str(burst), "latency", "50ms"]
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    subprocess.run(argv, check=True, capture_output=True, text=True)


class SimulatedHosts:
    """`count` namespaces `<prefix>-<i>` at SUBNET.<10+i>, the root at SUBNET.1."""

    def __init__(self, count: int, rate_mbit: float, prefix: str = "swbench"):
        self.count = count
        self.rate_mbit = rate_mbit
        self.prefix = prefix
        self.bridge = f"{prefix}br"
        self.root_ip = f"{SUBNET}.1"

    def ip(self, host: int) -> str:
        return f"{SUBNET}.{10 + host}"

    def namespace(self, host: int) -> str:
        return f"{self.prefix}-{host}"

    def wrap(self, host: int, argv: list[str]) -> list[str]:
        """argv run inside host `host`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def __enter__(self) -> "SimulatedHosts":
        self.remove()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.root_ip}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in range(self.count):
                self._add_host(host)
        except subprocess.CalledProcessError as error:
            self.remove()
            raise RuntimeError(f"could not make the simulated hosts (run as root?): "
                               f"{' '.join(error.cmd)}: {error.stderr.strip()}") from None
        return self

    def _add_host(self, host: int) -> None:
        ns, veth = self.namespace(host), f"{self.prefix}v{host}"
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _tc_rate("eth0", self.rate_mbit, ns)      # the host's uplink
        _tc_rate(veth, self.rate_mbit)            # its downlink (the switch port's egress)

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Deletes this prefix's namespaces (their veths go with them) and the bridge."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(f"{self.prefix}-"):
                _ip("netns", "del", name, check=False)
        _ip("link", "del", self.bridge, check=False)
