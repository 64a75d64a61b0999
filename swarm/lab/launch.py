"""One launcher for real swarms on this host: the tests', the examples', the benchmarks'
and the lab's process backend.

``LocalSwarm(root, nodes, sidecar=[...])`` is a context manager that

1. makes the certificates: one gen-cert site per node (site-I, index I), every site
   trusting every other site's CA (reused when ``certs`` already holds them);
2. starts a sentinel SN on a fresh embedded ledger and waits until it serves;
3. starts N SL nodes (run-sl), node i running ``sidecar`` as its ML sidecar (a local
   process) with NODE_INDEX=i, NUM_NODES, MODEL_DIR and the given environment;
4. ``wait()`` returns every SL node's exit status (stopping the others once one fails:
   its peers would wait for it in vain); ``outcomes(i)`` reads node i's RoundOutcome
   records (its rounds.jsonl);
5. on exit stops whatever still runs, SL nodes first.

Layout of ROOT: workspace/ (certificates, unless ``certs`` is given), sn-1/ (the
ledger), sl-I/ (SL node I's data dir: rounds.jsonl), model-I/ (its sidecar's MODEL_DIR),
logs/ (every process's output). I counts from 1 as gen-cert's sites do; NODE_INDEX from 0.

``run_process`` is the lab's process backend: one task (swarm.lab.tasks) as such a swarm,
each node's sidecar being ``python -m swarm.lab.node``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import swarm

# The directory holding the swarm package and the node programs (sn_node, sl_node, certs).
REPO = Path(swarm.__file__).resolve().parent.parent
READY = "Starting SWARM-API-SERVER on port:"
OUTCOMES_FILE = "rounds.jsonl"
SENTINEL_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
PROCESS_TASK_TIMEOUT_S = 1800.0


def program(script: str, module: str, scripts: bool = False) -> list[str]:
    """How to run a swarm program: with `scripts`, its console script installed beside
    this Python (what a user types; the module when it is not installed), else the
    module run by this Python."""
    path = Path(sys.executable).parent / script
    return [str(path)] if scripts and path.exists() else [sys.executable, "-m", module]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- certificates ---------------------------------------------------------------------

def sl_node_id(i: int) -> str:
    """The SL node id of node i (NODE_INDEX, from 0) in a LocalSwarm: its certificate's
    identity, gen-cert site "site-I" with index I = i + 1."""
    return f"site-{i + 1}/sl-{i + 1}"


def ledger_order(nodes: int) -> list[int]:
    """The node indices in the order a sealed round lists a LocalSwarm's participants:
    sorted by the ledger's member key, keccak256 of the node id (as
    swarm.ledger.client.node_key computes it; eth_utils alone imports much faster)."""
    from eth_utils import keccak
    return sorted(range(nodes), key=lambda i: keccak(text=sl_node_id(i)))


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

    def material(self, role: str):
        from swarm.identity import load_tls
        return load_tls(self.cert(role), self.key(role), self.capath)

    def ca(self):
        """The site CA's (key, certificate), to issue extra certificates in tests."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        key = load_pem_private_key(
            (self.cert_dir / "ca" / f"ca-{self.index}-key.pem").read_bytes(), None)
        cert = x509.load_pem_x509_certificate(
            (self.capath / f"ca-{self.index}-cert.pem").read_bytes())
        return key, cert


def share_cas(sites: Sequence[Site]) -> None:
    """Every site's CA certificate into every other site's capath."""
    for site in sites:
        for other in sites:
            ca = other.capath / f"ca-{other.index}-cert.pem"
            target = site.capath / ca.name
            if other is not site and not target.exists():
                shutil.copy(ca, target)


def gen_cert_argv(root: Path, index: int, scripts: bool = False) -> list[str]:
    """gen-cert for site-INDEX under `root`."""
    return [*program("gen-cert", "certs.gen_cert", scripts), "-e", f"site-{index}",
            "-i", str(index), "--out", str(root)]


def make_workspace(root: Path, nodes: int) -> list[Site]:
    """Sites site-1..site-N under `root` (gen-cert for those not made yet), all trusting
    each other. Safe to call from several processes at once (a lock file in `root`)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sites = [Site(f"site-{i}", i, root / f"site-{i}" / "cert") for i in range(1, nodes + 1)]
        for site in sites:
            if not site.cert("sl").exists():
                shutil.rmtree(root / site.name, ignore_errors=True)  # half made: again
                subprocess.run(gen_cert_argv(root, site.index), check=True,
                               cwd=REPO, stdout=subprocess.DEVNULL, env=_env())
        share_cas(sites)
    return sites


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, the node programs importable, unbuffered output, then `extra`."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), path])),
            **{k: str(v) for k, v in (extra or {}).items()}}


# ---- processes ------------------------------------------------------------------------

class NodeProcess:
    """A swarm program run as a real process, its output collected line by line (and
    handed to `on_line(name, line)` and written to `log` when given)."""

    def __init__(self, argv: list[str], env: Mapping[str, str] | None = None, *,
                 name: str = "", on_line: Callable[[str, str], None] | None = None,
                 log: Path | None = None, cwd: Path | None = None, new_session: bool = False):
        """`new_session`: the process in its own session, so that a terminal's Ctrl-C
        reaches only this program, which then stops its processes in order."""
        self.argv = argv
        self.name = name
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._on_line = on_line
        self._log = log.open("w") if log is not None else None
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", cwd=cwd or REPO, env=_env(env), start_new_session=new_session)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cv:
                self.lines.append(line)
                self._cv.notify_all()
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
            if self._on_line is not None:
                self._on_line(self.name, line)
        with self._cv:
            self._cv.notify_all()
        if self._log is not None:
            self._log.close()

    @property
    def output(self) -> str:
        with self._cv:
            return "\n".join(self.lines)

    def poll(self) -> int | None:
        return self.proc.poll()

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

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)


def stop_all(procs: Sequence[NodeProcess]) -> None:
    """SIGTERM to every live process at once, then waits for each (SIGKILL past the timeout)."""
    live = [proc for proc in procs if proc.poll() is None]
    for proc in live:
        proc.proc.terminate()
    for proc in live:
        proc.stop(STOP_TIMEOUT_S)


def wait_all(procs: Sequence[NodeProcess], timeout_s: float = PROCESS_TASK_TIMEOUT_S,
             tick: Callable[[], None] | None = None,
             on_failure: Callable[[], None] | None = None) -> list[int]:
    """Every process's exit status. Once one fails the others are stopped (in a swarm
    its peers would wait for it in vain; `on_failure()` is told first); past the timeout
    all are stopped and TimeoutError raised. `tick()` runs every 0.1 s."""
    deadline = time.monotonic() + timeout_s
    while any(proc.poll() is None for proc in procs):
        if any(proc.poll() not in (None, 0) for proc in procs):
            if on_failure is not None:
                on_failure()
            stop_all(procs)
            break
        if time.monotonic() > deadline:
            stop_all(procs)
            raise TimeoutError(f"not finished within {timeout_s:.0f} s")
        if tick is not None:
            tick()
        time.sleep(0.1)
    return [proc.wait_exit(STOP_TIMEOUT_S) for proc in procs]


def run_sn_argv(site: Site, data_dir: Path, api_port: int, p2p_port: int,
                *extra: str, scripts: bool = False) -> list[str]:
    return [*program("run-sn", "sn_node.cli", scripts), *site.tls_args("sn"),
            "--host-ip", "127.0.0.1", "--sn-api-port", str(api_port),
            "--sn-p2p-port", str(p2p_port), "--data-dir", str(data_dir), *extra]


def run_sl_argv(site: Site, sn_api_port: int, data_dir: Path, fs_port: int, ml_cmd: str,
                ml_env: Mapping[str, str], *extra: str,
                ml_entrypoint: str | None = None, scripts: bool = False) -> list[str]:
    """run-sl for a local-process sidecar: `ml_entrypoint` (default this Python) `ml_cmd`."""
    argv = [*program("run-sl", "sl_node.cli", scripts), *site.tls_args("sl"),
            "--host-ip", "127.0.0.1", "--sn-ip", "127.0.0.1", "--sn-api-port", str(sn_api_port),
            "--sl-fs-port", str(fs_port), "--data-dir", str(data_dir),
            "--ml-entrypoint", ml_entrypoint or sys.executable, "--ml-cmd", ml_cmd, *extra]
    for key, value in ml_env.items():
        argv += ["--ml-e", f"{key}={value}"]
    return argv


def read_outcomes(path: Path) -> list[dict]:
    """The RoundOutcome records of a rounds.jsonl (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- a swarm --------------------------------------------------------------------------

class LocalSwarm:
    """A sentinel SN and N SL nodes with their sidecars, as real processes on loopback
    (see the module docstring). `sidecar` is the sidecar's argv (e.g. [python, train.py]),
    or with `entrypoint` (a command line, e.g. "python -m ml_sidecar") what that runs;
    `env` goes to every sidecar, `node_env(i)` to node i's (NODE_INDEX i, from 0).
    `port_base`: the SN's p2p port, its API port and one port per SL node following it
    (0: free ports). `scripts`: the console scripts (run-sn, run-sl) where installed.
    `new_session`: every process in its own session (see NodeProcess). `node_args(i)`:
    more run-sl flags for node i (after `sl_args`, so they win, e.g. its --host-ip);
    `wrap(i, argv)`: node i's run-sl command line as run (e.g. inside a network
    namespace, benchmarks/simulated_hosts.py). `sites`: node i's certificates are
    sites[i] (made already, e.g. all under one CA) instead of gen-cert's under `certs`."""

    def __init__(self, root: Path, nodes: int, sidecar: Sequence[str], *,
                 env: Mapping[str, object] | None = None,
                 node_env: Callable[[int], Mapping[str, object]] | None = None,
                 sidecar_dir: Path | None = None, certs: Path | None = None,
                 sn_args: Sequence[str] = (), sl_args: Sequence[str] = (),
                 on_line: Callable[[str, str], None] | None = None,
                 ready_timeout_s: float = SENTINEL_READY_TIMEOUT_S,
                 entrypoint: str | None = None, port_base: int = 0, scripts: bool = False,
                 new_session: bool = False,
                 node_args: Callable[[int], Sequence[str]] | None = None,
                 wrap: Callable[[int, list[str]], list[str]] | None = None,
                 sites: Sequence[Site] | None = None):
        if nodes < 1:
            raise ValueError(f"a swarm needs at least 1 node, not {nodes}")
        if not sidecar:
            raise ValueError("say what each node's sidecar runs: sidecar=[program, args...]")
        self.root = Path(root).resolve()
        self.nodes = nodes
        self.sidecar = list(sidecar)
        self.env = dict(env or {})
        self.node_env = node_env
        self.sidecar_dir = sidecar_dir
        self.certs = Path(certs) if certs is not None else self.root / "workspace"
        self.sn_args, self.sl_args = list(sn_args), list(sl_args)
        self.on_line = on_line
        self.ready_timeout_s = ready_timeout_s
        self.entrypoint = entrypoint
        self.port_base, self.scripts, self.new_session = port_base, scripts, new_session
        self.node_args, self.wrap = node_args, wrap
        self.given_sites = list(sites)[:nodes] if sites is not None else None
        if self.given_sites is not None and len(self.given_sites) < nodes:
            raise ValueError(f"{nodes} nodes need {nodes} sites, not {len(self.given_sites)}")
        self.sites = self.given_sites or [Site(f"site-{i}", i, self.certs / f"site-{i}" / "cert")
                                          for i in range(1, nodes + 1)]
        self.ports: list[int] = []  # SN p2p, SN API, then one per SL node
        self.sn: NodeProcess | None = None
        self.sls: list[NodeProcess] = []
        self.sn_api_port = 0
        self.started = 0.0

    # where things are
    def model_dir(self, i: int) -> Path:
        return self.root / f"model-{i + 1}"

    def data_dir(self, i: int) -> Path:
        return self.root / f"sl-{i + 1}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def outcomes(self, i: int) -> list[dict]:
        return read_outcomes(self.data_dir(i) / OUTCOMES_FILE)

    # lifecycle
    def __enter__(self) -> LocalSwarm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def commands(self) -> list[list[str]]:
        """The sentinel's, then every SL node's command line (ports chosen on first call)."""
        if not self.ports:
            base, count = self.port_base, self.nodes + 2
            self.ports = ([base + k for k in range(count)] if base
                          else [free_port() for _ in range(count)])
        self.sn_api_port = self.ports[1]
        sn = run_sn_argv(self.sites[0], self.root / "sn-1", self.sn_api_port, self.ports[0],
                         "--sentinel", *self.sn_args, scripts=self.scripts)
        sls = []
        for i in range(self.nodes):
            env = {"NODE_INDEX": i, "NUM_NODES": self.nodes, "MODEL_DIR": self.model_dir(i),
                   **self.env, **(self.node_env(i) if self.node_env else {})}
            extra = [*self.sl_args, *(self.node_args(i) if self.node_args else ())]
            if self.sidecar_dir is not None:
                extra += ["--ml-w", str(self.sidecar_dir)]
            entrypoint, cmd = ((self.entrypoint, self.sidecar) if self.entrypoint is not None
                               else (self.sidecar[0], self.sidecar[1:]))
            argv = run_sl_argv(self.sites[i], self.sn_api_port, self.data_dir(i),
                               self.ports[2 + i], shlex.join(cmd),
                               {k: str(v) for k, v in env.items()}, *extra,
                               ml_entrypoint=entrypoint, scripts=self.scripts)
            sls.append(self.wrap(i, argv) if self.wrap else argv)
        return [sn, *sls]

    def start(self) -> LocalSwarm:
        self.started = time.monotonic()
        if self.given_sites is None:
            self.sites = make_workspace(self.certs, self.nodes)
        for stale in ["sn-1", *(f"sl-{i}" for i in range(1, self.nodes + 1))]:
            shutil.rmtree(self.root / stale, ignore_errors=True)  # a fresh ledger every run
        self.logs.mkdir(parents=True, exist_ok=True)
        sn, *sls = self.commands()
        self.sn = self._process(sn, "sn-1")
        self.sn.wait_for(READY, self.ready_timeout_s)
        self.sls = [self._process(argv, f"sl-{i + 1}") for i, argv in enumerate(sls)]
        return self

    def _process(self, argv: list[str], name: str) -> NodeProcess:
        return NodeProcess(argv, name=name, on_line=self.on_line,
                           log=self.logs / f"{name}.log", new_session=self.new_session)

    def poll(self) -> list[int | None]:
        return [sl.poll() for sl in self.sls]

    def wait(self, timeout_s: float = PROCESS_TASK_TIMEOUT_S,
             tick: Callable[[], None] | None = None,
             on_failure: Callable[[], None] | None = None) -> list[int]:
        """Every SL node's exit status (see wait_all); TimeoutError names the logs."""
        try:
            return wait_all(self.sls, timeout_s, tick, on_failure)
        except TimeoutError:
            raise TimeoutError(f"the swarm did not finish within {timeout_s:.0f} s; "
                               f"logs in {self.logs}") from None

    def wait_ok(self, timeout_s: float = PROCESS_TASK_TIMEOUT_S,
                tick: Callable[[], None] | None = None) -> None:
        """wait(), then RuntimeError with the failing node's last lines unless every SL
        node exited 0 (for benchmarks: a failed run must not print a table)."""
        try:
            codes = self.wait(timeout_s, tick=tick)
        except TimeoutError as error:
            raise RuntimeError(f"{error}; an SL node's last lines:\n{self.tail(0, 10)}") from None
        failed = [i for i, code in enumerate(codes) if code != 0]
        if failed:
            raise RuntimeError("an SL node failed:\n" + self.tail(failed[0], 30))

    def stop(self) -> None:
        """Stops every live process: the SL nodes, then the sentinel they need until gone."""
        stop_all(self.sls)
        if self.sn is not None:
            self.sn.stop(STOP_TIMEOUT_S)

    def tail(self, i: int, lines: int = 30) -> str:
        return "\n".join(self.sls[i].lines[-lines:])


# ---- the lab's process backend ----------------------------------------------------------

NODE_RESULT = "lab_node.json"
NODE_WEIGHTS = "final.npy"
TASK_ENV = "SWARM_LAB_TASK"
CERTS_ENV = "SWARM_LAB_CERTS"


def lab_certs() -> Path:
    """Certificates shared by process-backend tasks ($SWARM_LAB_CERTS or a temp folder):
    made once, then every task starts its swarm without gen-cert."""
    return Path(os.environ.get(CERTS_ENV) or Path(tempfile.gettempdir()) / "swarm-lab-certs")


def run_process(task, data, workdir: Path) -> dict:
    """Runs `task` (swarm.lab.tasks.Task) as a real swarm; the result row."""
    from .tasks import swarm_result

    task_file = workdir / "task.json"
    task_file.write_text(task.to_json())
    run = workdir / "swarm"
    started = time.perf_counter()
    one_thread = {"OPENBLAS_NUM_THREADS": 1, "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1}
    with LocalSwarm(run, task.nodes, [sys.executable, "-m", "swarm.lab.node"],
                    env={TASK_ENV: task_file, **one_thread}, certs=lab_certs(),
                    sn_args=["--round-grace", "5"]) as swarm:
        codes = swarm.wait()
        wall_s = time.perf_counter() - started
        reports = []
        for i in range(task.nodes):
            path = swarm.model_dir(i) / NODE_RESULT
            reports.append(json.loads(path.read_text()) if path.exists() else None)
        diverged = next((r["error"] for r in reports if r and r.get("diverged")), None)
        if diverged is not None:
            return swarm_result(task, data, [None] * task.nodes, 0, wall_s, error=diverged)
        failed = [i for i, code in enumerate(codes) if code != 0]
        if failed:
            raise RuntimeError(f"process backend: SL node {failed[0] + 1} exited "
                               f"{codes[failed[0]]}; logs in {swarm.logs}; last lines:\n"
                               f"{swarm.tail(failed[0])}")
        finals = [np.load(swarm.model_dir(i) / NODE_WEIGHTS) for i in range(task.nodes)]
        rounds = len({o["round"] for o in swarm.outcomes(0) if o["status"] == "merged"})
    return swarm_result(task, data, finals, rounds, wall_s)

