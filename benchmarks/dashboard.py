"""Figures of the SN dashboard, printed as tables.

1. Cost on the round time: the same swarm (one sentinel SN on the embedded ledger, N
   real run-sl processes with synthetic sidecars, mTLS on loopback) run without and
   with `--dashboard`, the latter with live viewers attached to its server-sent events
   for the whole run. Median over rounds of the slowest node's round time; the ratio
   on/off. Runs alternate off/on --repeats times.
2. The page, against the SN of the last "on" run once its read model holds the whole
   run: payload sizes (the page with its first snapshot inline, /api/snapshot, one
   server-sent event), server response time of the page (median of 20), and, when
   Debian's chromium and chromedriver are installed, the browser's load time
   (navigation start to load event, and to the first live update; median of 5).

    .venv/bin/python benchmarks/dashboard.py [--nodes 4] [--rounds 30] [--model-kb 64] [--repeats 1]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from sn_node.dashboard import COOKIE, DASHBOARD_LINE  # noqa: E402
from swarm.lab.launch import LocalSwarm, free_port  # noqa: E402


def https(port: int) -> http.client.HTTPSConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # a benchmark: the test checks the chain
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)


class Viewer(threading.Thread):
    """One open dashboard: reads its server-sent events until stopped."""

    def __init__(self, port: int, token: str):
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.events = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        conn = https(self.port)
        conn.request("GET", "/events", headers={"Cookie": f"{COOKIE}={self.token}"})
        resp = conn.getresponse()
        while not self.stop_flag.is_set():
            line = resp.fp.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                self.events += 1
        conn.close()


def run_swarm(certs: Path, tmp: Path, nodes: int, rounds: int, model_bytes: int,
              dashboard: bool, viewers: int, tag: str):
    """One swarm run (the launcher library's LocalSwarm): (median round time, rounds
    measured, SSE events seen, the swarm with its SN still running if dashboard, the
    dashboard's port, its token URL). The caller stops a returned swarm."""
    port = free_port() if dashboard else None
    sn_args = ["--round-grace", "5", "--log-level", "WARNING"]
    if dashboard:
        sn_args += ["--dashboard", "--dashboard-port", str(port)]
    swarm = LocalSwarm(tmp / f"run-{tag}", nodes, [sys.executable, str(HERE / "synthetic_sidecar.py")],
                       env={"MIN_PEERS": nodes, "ROUNDS": rounds, "MODEL_BYTES": model_bytes},
                       certs=certs, sn_args=sn_args,
                       sl_args=["--peer-timeout", "30", "--log-level", "WARNING"])
    watchers: list[Viewer] = []
    try:
        swarm.start()
        token_url = ""
        if dashboard:
            token_url = swarm.sn.wait_for(DASHBOARD_LINE.split("{")[0]).split(": ", 1)[1].strip()
        token = token_url.partition("?token=")[2]
        watchers = [Viewer(port, token) for _ in range(viewers if dashboard else 0)]
        for w in watchers:
            w.start()
        codes = swarm.wait(1800)
        if any(codes):
            raise RuntimeError(f"an SL node of run {tag} failed (exits {codes}); logs in {swarm.logs}")
    except BaseException:
        swarm.stop()
        raise
    finally:
        for w in watchers:
            w.stop_flag.set()
    per_round: dict[int, list[float]] = {}
    for i in range(nodes):
        for r in swarm.outcomes(i):
            if r["status"] == "merged":
                per_round.setdefault(r["round"], []).append(r["control_s"] + r["exchange_s"])
    complete = [max(v) for k, v in sorted(per_round.items()) if len(v) == nodes][1:]  # round 1 waits for start-up
    events = sum(w.events for w in watchers)
    if not dashboard:
        swarm.stop()
    return statistics.median(complete), len(complete), events, swarm, port, token_url


def page_figures(token_url: str, port: int, loads: int) -> dict:
    cookie = {"Cookie": f"{COOKIE}={token_url.partition('?token=')[2]}"}
    out: dict = {}
    times, page = [], b""
    for _ in range(20):
        conn = https(port)
        started = time.perf_counter()
        conn.request("GET", "/", headers=cookie)
        page = conn.getresponse().read()
        times.append(time.perf_counter() - started)
        conn.close()
    out["page bytes"] = len(page)
    out["page response (ms, median of 20)"] = statistics.median(times) * 1000
    conn = https(port)
    conn.request("GET", "/api/snapshot", headers=cookie)
    out["/api/snapshot bytes"] = len(conn.getresponse().read())
    conn = https(port)
    conn.request("GET", "/events", headers=cookie)
    resp = conn.getresponse()
    event = b""
    while True:
        line = resp.fp.readline()
        event += line
        if line == b"\n" and event.strip():
            break
    out["one server-sent event bytes"] = len(event)
    conn.close()
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        out["browser load"] = "skipped: chromium/chromedriver not installed"
        return out
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--ignore-certificate-errors"):
        options.add_argument(arg)
    page_driver = webdriver.Chrome(service=Service(driver), options=options)
    try:
        page_driver.get(token_url)  # sets the cookie
        loaded, live = [], []
        for _ in range(loads):
            page_driver.get(f"https://127.0.0.1:{port}/")
            timing = page_driver.execute_script(
                "const t=performance.getEntriesByType('navigation')[0];return [t.loadEventEnd,t.startTime]")
            loaded.append(timing[0] - timing[1])
            started = time.perf_counter()
            while page_driver.find_element("id", "live").text != "live":
                time.sleep(0.005)
            live.append(timing[0] - timing[1] + (time.perf_counter() - started) * 1000)
        out[f"browser: load event (ms, median of {loads})"] = statistics.median(loaded)
        out[f"browser: first live update (ms, median of {loads})"] = statistics.median(live)
    finally:
        page_driver.quit()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--model-kb", type=int, default=64)
    parser.add_argument("--viewers", type=int, default=2, help="live viewers attached in the 'on' runs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp_name:
        tmp = Path(tmp_name)
        certs = tmp / "ws"  # made by the first run, reused by the others
        off, on, events = [], [], 0
        kept = None
        for rep in range(args.repeats):
            for dashboard in (False, True):
                if kept is not None:
                    kept[0].stop()
                    kept = None
                median, n, seen, swarm, port, token_url = run_swarm(
                    certs, tmp, args.nodes, args.rounds, args.model_kb * 1024, dashboard,
                    args.viewers, f"{rep}-{int(dashboard)}")
                (on if dashboard else off).append(median)
                events += seen
                if dashboard:
                    kept = (swarm, port, token_url)
        table = Table(title=f"Round time with and without the dashboard: N={args.nodes}, "
                            f"{args.rounds} rounds, {args.model_kb} KB model, {args.viewers} live viewers")
        for col in ("dashboard", "median round (s)", "runs"):
            table.add_column(col)
        table.add_row("off", f"{statistics.median(off):.3f}", str(len(off)))
        table.add_row("on", f"{statistics.median(on):.3f}", str(len(on)))
        table.add_row("ratio on/off", f"{statistics.median(on) / statistics.median(off):.3f}", "")
        console.print(table)
        console.print(f"server-sent events received by the viewers: {events}")
        try:
            figures = page_figures(kept[2], kept[1], args.loads)
        finally:
            kept[0].stop()
        table = Table(title="The dashboard page (read model holding the whole run)")
        table.add_column("figure")
        table.add_column("value")
        for key, value in figures.items():
            table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
