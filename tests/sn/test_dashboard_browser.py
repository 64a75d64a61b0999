"""The dashboard of a real running swarm in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium): it loads over HTTPS with the token printed at start,
shows the members, the advancing round and the merged model's validation metrics, and updates live without a reload. Afterwards
`swarm ledger verify` passes on the sentinel's data directory (offline) and through the
running sentinel, with the saved models."""
from __future__ import annotations

import http.client
import shutil
import ssl
import time

import pytest

from swarm.cli.ledger import main as ledger_main
from swarm_testing import free_port

from sn_node.dashboard import DASHBOARD_LINE

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make browser, as root)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[dev])")
    return browser, driver


def headless(browser: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100",
                # The swarm's CA is private (gen-cert): the browser cannot know it. The plain
                # HTTPS client below checks the chain against it instead.
                "--ignore-certificate-errors"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_until(what: str, check, timeout_s: float, procs=()):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        for proc in procs:
            assert proc.proc.poll() is None or proc.proc.returncode == 0, proc.output[-3000:]
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


def test_dashboard_of_a_running_swarm_in_chromium(sites, start_sn, start_sl, tmp_path):
    browser, driver = chromium()
    alpha, beta, _ = sites
    port = free_port()
    sn = start_sn(alpha, None, "--dashboard", "--dashboard-port", str(port), "--round-grace", "1")
    url = sn.proc.wait_for(DASHBOARD_LINE.split("{")[0]).split(": ", 1)[1].strip()
    assert url.startswith(f"https://127.0.0.1:{port}/?token=")

    # VALIDATE=1: the sidecars measure each merged model, which the page plots.
    env = {"NUM_NODES": "2", "MAX_EPOCHS": "8", "MIN_PEERS": "2", "SYNC_FREQUENCY": "2",
           "VALIDATE": "1"}
    nodes = [start_sl(site, sn, SIDECAR, {**env, "NODE_INDEX": str(i), "MODEL_DIR": str(tmp_path / f"m{i}")})
             for i, site in enumerate((alpha, beta))]
    procs = [p for p, _ in nodes]

    # Neither an accepted certificate nor the token: refused.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=alpha.material("sn").ca_bundle_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn.request("GET", "/")
    refused = conn.getresponse()
    assert refused.status == 401, refused.read()

    page = headless(browser, driver)
    try:
        started = time.monotonic()
        page.get(url)
        load_s = time.monotonic() - started
        assert page.current_url == f"https://127.0.0.1:{port}/"  # the token became a cookie
        page.execute_script("window.notReloaded = true")
        sl_ids = [f"{site.name}/sl-{site.index}" for site in (alpha, beta)]

        # Read in one script: the page re-renders on every update, so an element found
        # by one WebDriver call may be gone by the next (StaleElementReference).
        def members():
            rows = page.execute_script("return [...document.querySelectorAll("
                                       "'#members tbody tr')].map(r => r.dataset.node)")
            return set(rows) >= set(sl_ids)
        wait_until("both SL nodes listed as members", members, 90, procs)

        def round_shown() -> int:
            text = page.execute_script("const e = document.getElementById('current-round');"
                                       "return e ? e.textContent : ''")
            return int(text.split()[1]) if text.startswith("round ") else 0
        first = wait_until("a round in progress", round_shown, 90, procs)
        later = wait_until(f"a round after {first}", lambda: round_shown() > first and round_shown(), 120, procs)
        assert page.execute_script("return window.notReloaded === true"), "the page was reloaded"
        assert page.find_element("id", "live").text == "live"
        wait_until("a plotted round time", lambda: page.find_elements("css selector", "#times svg polyline"),
                   60, procs)
        wait_until("plotted validation metrics",
                   lambda: page.find_elements("css selector", "#metrics svg polyline"), 60, procs)
        assert "val_loss" in page.execute_script("return document.getElementById('metrics').textContent")
        shot = tmp_path / "dashboard.png"
        page.save_screenshot(str(shot))
        print(f"dashboard screenshot: {shot} (rounds {first} -> {later}, page load {load_s:.2f} s)")
        assert shot.stat().st_size > 10_000
    finally:
        page.quit()

    for proc in procs:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    models = [str(tmp_path / f"m{i}" / "saved_models" / "swarm_model.npz") for i in range(2)]
    assert ledger_main(["verify", "--data-dir", str(sn.data_dir), "--model", *models]) == 0
    # The same ledger read live through the running sentinel's ledger port (an SN certificate).
    assert ledger_main(["verify", "--sn", sn.target, "--sn-p2p-port", str(sn.p2p_port),
                        *alpha.tls_args("sn"), "--model", *models]) == 0
