"""Shared fixtures: certificates made with gen-cert, and real node processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from certs.gen_cert import main as gen_cert
from swarm.identity import TlsMaterial, load_tls

REPO = Path(__file__).resolve().parent.parent
READY = "Starting SWARM-API-SERVER on port:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Site:
    """One site's gen-cert output: a CA and sn/sl/swci certificates for one index."""

    name: str
    index: int
    cert_dir: Path

    @property
    def capath(self) -> Path:
        return self.cert_dir / "ca" / "capath"

    def cert(self, role: str) -> Path:
        return self.cert_dir / f"{role}-{self.index}-cert.pem"

    def key(self, role: str) -> Path:
        return self.cert_dir / f"{role}-{self.index}-key.pem"

    def tls_args(self, role: str) -> list[str]:
        return ["--cert", str(self.cert(role)), "--key", str(self.key(role)),
                "--capath", str(self.capath)]

    def material(self, role: str) -> TlsMaterial:
        return load_tls(self.cert(role), self.key(role), self.capath)

    def ca(self):
        """The site CA's (key, certificate), to issue extra certificates in tests."""
        key = load_pem_private_key(
            (self.cert_dir / "ca" / f"ca-{self.index}-key.pem").read_bytes(), None)
        cert = x509.load_pem_x509_certificate(
            (self.capath / f"ca-{self.index}-cert.pem").read_bytes())
        return key, cert


def make_sites(root: Path, names_and_indices: list[tuple[str, int]]) -> list[Site]:
    """Runs gen-cert per site, then shares every CA certificate into every capath."""
    sites = []
    for name, index in names_and_indices:
        assert gen_cert(["-e", name, "-i", str(index), "--out", str(root)]) == 0
        sites.append(Site(name, index, root / name / "cert"))
    for site in sites:
        for other in sites:
            if other is not site:
                ca = other.capath / f"ca-{other.index}-cert.pem"
                shutil.copy(ca, site.capath / ca.name)
    return sites


@pytest.fixture(scope="session")
def sites(tmp_path_factory) -> list[Site]:
    """Three sites that trust each other: alpha (1), beta (2), gamma (3)."""
    return make_sites(tmp_path_factory.mktemp("workspace"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3)])


class NodeProcess:
    """A swarm program run as a real process, its output collected line by line."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.argv = argv
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    @property
    def output(self) -> str:
        with self._cv:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        """Waits for a line containing text; fails with the output if the process dies."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"process exited ({self.proc.returncode}) before "
                                         f"printing {text!r}:\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.output}")
                self._cv.wait(min(left, 0.2))

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self._reader.join(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)


def run_sn_argv(site: Site, data_dir: Path, api_port: int, p2p_port: int,
                *extra: str) -> list[str]:
    return [sys.executable, "-m", "sn_node.cli", *site.tls_args("sn"),
            "--host-ip", "127.0.0.1", "--sn-api-port", str(api_port),
            "--sn-p2p-port", str(p2p_port), "--data-dir", str(data_dir), *extra]


@pytest.fixture
def processes():
    """Starts NodeProcesses and stops every one of them at the end of the test."""
    started: list[NodeProcess] = []

    def start(argv: list[str], env: dict | None = None) -> NodeProcess:
        proc = NodeProcess(argv, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()
    for proc in started:  # shown by pytest only when the test failed
        print(f"----- {' '.join(proc.argv[1:4])} … (exit {proc.proc.returncode})\n{proc.output}")


@dataclass
class SN:
    proc: NodeProcess
    api_port: int
    p2p_port: int
    data_dir: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.api_port}"


@pytest.fixture
def start_sn(processes, tmp_path):
    """start_sn(site, sentinel=None|SN, *extra) -> a ready SN node process."""
    count = [0]

    def start(site: Site, sentinel: SN | None = None, *extra: str,
              data_dir: Path | None = None, api_port: int | None = None,
              p2p_port: int | None = None, wait: bool = True) -> SN:
        count[0] += 1
        data_dir = data_dir or tmp_path / f"sn{count[0]}"
        api_port, p2p_port = api_port or free_port(), p2p_port or free_port()
        role = (["--sentinel"] if sentinel is None else
                ["--sentinel-ip", "127.0.0.1", "--sentinel-api-port", str(sentinel.api_port)])
        proc = processes(run_sn_argv(site, data_dir, api_port, p2p_port, *role, *extra))
        sn = SN(proc, api_port, p2p_port, data_dir)
        if wait:
            proc.wait_for(READY)
        return sn

    return start
