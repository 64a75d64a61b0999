"""Helpers the tests share: certificates made with gen-cert, real node processes."""

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


@dataclass
class SN:
    proc: NodeProcess
    api_port: int
    p2p_port: int
    data_dir: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.api_port}"


def run_sl_argv(site: Site, sn: SN, data_dir: Path, fs_port: int, ml_cmd: str,
                ml_env: dict[str, str], *extra: str) -> list[str]:
    """run-sl for a local-process sidecar run with this Python."""
    argv = [sys.executable, "-m", "sl_node.cli", *site.tls_args("sl"),
            "--host-ip", "127.0.0.1", "--sn-ip", "127.0.0.1", "--sn-api-port", str(sn.api_port),
            "--sl-fs-port", str(fs_port), "--data-dir", str(data_dir),
            "--ml-entrypoint", sys.executable, "--ml-cmd", ml_cmd, *extra]
    for key, value in ml_env.items():
        argv += ["--ml-e", f"{key}={value}"]
    return argv
