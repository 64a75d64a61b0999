"""argparse types the programs share."""

from __future__ import annotations

import argparse
import ipaddress


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def whole_number(minimum: int):
    """An argparse type: an integer of at least `minimum`, with a message saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


def ip_address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    return text


def node_tls(role: str, cert: str, key: str, capath: str):
    """A node program's --cert/--key/--capath, which must hold a certificate of `role`.

    Raises ValueError with the one line the program prints before exiting 2.
    """
    from swarm.identity import TlsConfigError, load_tls

    try:
        tls = load_tls(cert, key, capath)
    except TlsConfigError as error:
        raise ValueError(str(error)) from None
    if tls.identity.role != role:
        raise ValueError(f"--cert {cert} is a {tls.identity.role!r} certificate "
                         f"({tls.identity.node_id}); this program needs an "
                         f"{role}-INDEX-cert.pem")
    return tls


def add_metrics_args(group) -> None:
    """run-sn's and run-sl's Prometheus flags (one definition for both programs)."""
    group.add_argument("--metrics-port", type=port, metavar="PORT",
                       help="serve Prometheus metrics on http://METRICS-IP:PORT/metrics "
                            "(default: off)")
    group.add_argument("--metrics-ip", type=ip_address, default="127.0.0.1", metavar="IP",
                       help="address the metrics endpoint listens on (default 127.0.0.1)")
