"""The SN dashboard's server: HTTPS with the SN's certificate, access by swarm certificate or
token only, a snapshot per change over server-sent events. The read model is a stand-in
here (its real one is tested in the browser test against a running swarm)."""
from __future__ import annotations

import http.client
import json
import ssl
import threading

import pytest

from sn_node.dashboard import COOKIE, Dashboard
from swarm_testing import make_sites


class FakeView:
    """The read model's reading side: version + snapshot().to_dict()."""

    def __init__(self):
        self.version = 1
        self.round = 3
        self.lock = threading.Lock()

    def snapshot(self):
        with self.lock:
            data = {
                "version": self.version, "at": 1.0, "sn_node_id": "site-a/sn-1", "sentinel": True,
                "ledger_kind": "embedded", "contract_address": "0xabc", "chain_id": 1, "block_number": 9,
                "session": {"configured": True, "min_peers": 2, "config": {}, "finished_count": 0,
                            "swarm_done": False},
                "members": [{"node_id": "site-a/sl-1", "role": "sl", "status": "active", "endpoint": "x:1",
                             "alive": True, "heartbeat_age_s": 0.5, "controlled_here": True,
                             "finished": False}],
                "current": {"round": self.round, "checked_in": ["site-a/sl-1"], "missing": ["site-b/sl-1"],
                            "short_by": 1, "waiting_s": 1.5},
                "last_sealed_round": self.round - 1, "latest_merged_round": self.round - 1,
                "rounds": [], "events": []}

        class Snap:
            def to_dict(self):
                return data
        return Snap()

    def advance(self):
        with self.lock:
            self.version += 1
            self.round += 1


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    swarm = make_sites(root, [("site-a", 1)])
    outsider = make_sites(root / "other", [("site-z", 9)])
    return swarm[0], outsider[0]


@pytest.fixture
def dashboard(sites):
    site, _ = sites
    view = FakeView()
    revoked: set[str] = set()
    board = Dashboard(view, cert_file=str(site.cert("sn")), key_file=str(site.key("sn")),
                      ca_bundle_pem=site.material("sn").ca_bundle_pem, port=0,
                      is_revoked=lambda fp: fp in revoked)
    board.start()
    board.view, board.revoked = view, revoked
    yield board
    board.stop()


def client(board, site=None, role="swci") -> http.client.HTTPSConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the chain is still verified against the swarm's CA
    ctx.load_verify_locations(cadata=board.ca_pem)
    if site is not None:
        ctx.load_cert_chain(site.cert(role), site.key(role))
    return http.client.HTTPSConnection("127.0.0.1", board.port, context=ctx, timeout=10)


@pytest.fixture(autouse=True)
def _ca(dashboard, sites):
    dashboard.ca_pem = sites[0].material("sn").ca_bundle_pem.decode()


def get(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def test_a_client_without_certificate_or_token_is_refused(dashboard):
    for path in ("/", "/api/snapshot", "/events"):
        resp, body = get(client(dashboard), path)
        assert resp.status == 401, path
        assert b"access refused" in body
    resp, body = get(client(dashboard), "/?token=not-the-token")
    assert resp.status == 401 and b"wrong token" in body


def test_the_token_sets_a_cookie_that_opens_the_page(dashboard):
    resp, _ = get(client(dashboard), f"/?token={dashboard.token}")
    assert resp.status == 303 and resp.getheader("Location") == "/"
    cookie = resp.getheader("Set-Cookie")
    assert cookie.startswith(f"{COOKIE}={dashboard.token}") and "HttpOnly" in cookie and "Secure" in cookie
    resp, body = get(client(dashboard), "/", {"Cookie": f"{COOKIE}={dashboard.token}"})
    assert resp.status == 200
    page = body.decode()
    assert "site-a/sl-1" in page  # the first snapshot is in the page itself
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


def test_a_swarm_certificate_opens_the_api_and_a_revoked_one_does_not(dashboard, sites):
    site, _ = sites
    resp, body = get(client(dashboard, site, "swci"), "/api/snapshot")
    assert resp.status == 200 and json.loads(body)["current"]["missing"] == ["site-b/sl-1"]
    dashboard.revoked.add(site.material("swci").identity.fingerprint)
    resp, body = get(client(dashboard, site, "swci"), "/api/snapshot")
    assert resp.status == 401 and b"revoked" in body


def test_a_certificate_from_another_ca_fails_the_handshake(dashboard, sites):
    _, outsider = sites
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        get(client(dashboard, outsider, "swci"), "/api/snapshot")


def test_events_push_a_snapshot_on_every_change(dashboard, sites):
    conn = client(dashboard, sites[0], "sl")
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")

    def next_snapshot() -> dict:
        lines = []
        while True:
            line = resp.fp.readline().decode().rstrip("\n")
            if not line and lines:
                break
            lines.append(line)
        data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
        return json.loads(data[0])

    assert next_snapshot()["current"]["round"] == 3
    dashboard.view.advance()
    assert next_snapshot()["current"]["round"] == 4
    conn.close()


def test_run_sn_refuses_a_dashboard_port_it_already_uses(sites, capsys):
    from sn_node.cli import parse_config

    site, _ = sites
    base = ["--sentinel", *site.tls_args("sn"), "--sn-api-port", "31000", "--dashboard"]
    for clash in (["--dashboard-port", "31000"], ["--metrics-port", "31002", "--dashboard-port", "31002"]):
        with pytest.raises(SystemExit):
            parse_config(base + clash)
        assert "--dashboard-port" in capsys.readouterr().err
    _, args = parse_config(base)
    assert (args.dashboard, args.dashboard_host, args.dashboard_port) == (True, "127.0.0.1", 30380)
