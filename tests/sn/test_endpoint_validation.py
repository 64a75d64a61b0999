"""Endpoints nodes register must be addresses peers can dial."""

from __future__ import annotations

import pytest

from sn_node.service import endpoint_problem


@pytest.mark.parametrize("endpoint", ["127.0.0.1:30305", "10.1.2.3:1", "[::1]:30305",
                                      "sl-1.hospital.example:443", "localhost:30305"])
def test_dialable_endpoints_pass(endpoint):
    assert endpoint_problem(endpoint) is None


@pytest.mark.parametrize("endpoint, why", [
    ("127.0.0.1", "HOST:PORT"),
    (":30305", "HOST:PORT"),
    ("127.0.0.1:0", "port"),
    ("127.0.0.1:70000", "port"),
    ("127.0.0.1:http", "port"),
    ("0.0.0.0:30305", "cannot dial"),
    ("[::]:30305", "cannot dial"),
    ("224.0.0.1:30305", "cannot dial"),
    ("255.255.255.255:30305", "cannot dial"),
    ("::1:30305", "brackets"),
    ("not a host:30305", "neither an IP address nor a DNS name"),
    ("-bad-.example:1", "neither"),
    ("999.1.1.1:30305", "neither"),
    ("x" * 300 + ":1", "HOST:PORT"),
])
def test_garbage_is_refused_naming_what_is_wrong(endpoint, why):
    assert why in endpoint_problem(endpoint)
