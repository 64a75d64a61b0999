"""Launching the ML sidecar: a container (--ml-image) or, without one, a local process."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("swarm.sl.ml")

# Inside a container the SL node's socket directory is mounted here.
CONTAINER_SOCKET_DIR = "/swarm-sl"
# How long a stopped sidecar gets to save its work before it is killed.
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class SidecarSpec:
    """What run-sl's --ml-* flags say about the user's training program."""

    cmd: list[str]
    entrypoint: list[str] = field(default_factory=list)
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[tuple[str, str]] = field(default_factory=list)  # (host SRC, sidecar DST)
    image: str | None = None
    name: str | None = None
    engine: str | None = None  # docker | podman, for --ml-image


def parse_volume(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition(":")
    if not sep or not src or not dst:
        raise ValueError(f"--ml-v {text!r} is not SRC:DST")
    dst = dst.split(":")[0]  # drop docker's ':ro' style options
    return str(Path(src).expanduser().resolve()), dst


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--ml-e {text!r} is not KEY=VALUE")
    return key, value


def _host_path(value: str, volumes: list[tuple[str, str]]) -> str:
    """Maps a path the program sees (a volume's DST) to the host (its SRC): local runs."""
    for src, dst in sorted(volumes, key=lambda v: -len(v[1])):
        if value == dst or value.startswith(dst.rstrip("/") + "/"):
            return src + value[len(dst.rstrip("/")):]
    return value


def local_command(spec: SidecarSpec, socket_path: Path) -> tuple[list[str], dict[str, str], str | None]:
    """argv, environment and working directory of the sidecar as a local process.

    Without a container, `--ml-v SRC:DST` cannot mount anything: paths under DST in
    the command, the environment and the working directory are rewritten to SRC.
    """
    argv = [_host_path(a, spec.volumes) for a in [*spec.entrypoint, *spec.cmd]]
    env = {**os.environ, **{k: _host_path(v, spec.volumes) for k, v in spec.env.items()},
           "SWARM_SL_ADDRESS": f"unix://{socket_path}"}
    workdir = _host_path(spec.workdir, spec.volumes) if spec.workdir else None
    return argv, env, workdir


def container_command(spec: SidecarSpec, socket_path: Path) -> list[str]:
    """The docker/podman CLI command that runs the sidecar with the SL socket mounted."""
    engine = spec.engine or next((e for e in ("docker", "podman") if shutil.which(e)), "docker")
    argv = [engine, "run", "--rm", "-v", f"{socket_path.parent}:{CONTAINER_SOCKET_DIR}",
            "-e", f"SWARM_SL_ADDRESS=unix://{CONTAINER_SOCKET_DIR}/{socket_path.name}"]
    if spec.name:
        argv += ["--name", spec.name]
    if spec.workdir:
        argv += ["-w", spec.workdir]
    for src, dst in spec.volumes:
        argv += ["-v", f"{src}:{dst}"]
    for key, value in spec.env.items():
        argv += ["-e", f"{key}={value}"]
    if spec.entrypoint:
        argv += ["--entrypoint", spec.entrypoint[0]]
    argv.append(spec.image)
    return argv + spec.entrypoint[1:] + spec.cmd


def _die_with_parent() -> None:
    """Linux: the local sidecar gets SIGTERM if its SL node dies, even by SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Sidecar:
    """The running ML sidecar; its output goes to a log file and to the SL node's log."""

    def __init__(self, spec: SidecarSpec, socket_path: Path, log_path: Path):
        self.spec = spec
        self.log_path = log_path
        if spec.image:
            argv, env, workdir = container_command(spec, socket_path), None, None
        else:
            argv, env, workdir = local_command(spec, socket_path)
        if not argv:
            raise ValueError("no ML program to run: give --ml-cmd (and --ml-entrypoint)")
        log.info("starting the ML sidecar: %s", shlex.join(argv))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.proc = subprocess.Popen(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, errors="replace",
                                         preexec_fn=_die_with_parent)
        except OSError as error:
            raise ValueError(f"cannot start the ML sidecar {argv[0]!r}: {error.strerror}") from None
        self._pump = threading.Thread(target=self._follow, name="ml-log", daemon=True)
        self._pump.start()

    def _follow(self) -> None:
        with open(self.log_path, "a", encoding="utf-8") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                log.info("ml | %s", line.rstrip())

    def wait(self) -> int:
        code = self.proc.wait()
        self._pump.join(5)
        return code

    def request_stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM now and SIGKILL after `grace_s` if it still runs; returns at once, so a
        signal handler can call it while the main thread is blocked in wait()."""
        if self.proc.poll() is None:
            self.proc.terminate()
            killer = threading.Timer(grace_s, self._kill_if_running)
            killer.daemon = True
            killer.start()

    def _kill_if_running(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
