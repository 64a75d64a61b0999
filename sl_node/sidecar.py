"""Launching the ML sidecar: a container (--ml-image) or, without one, a local process."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger("swarm.sl.ml")

# Inside a container the SL node's socket directory is mounted here.
CONTAINER_SOCKET_DIR = "/swarm-sl"
# How long a stopped sidecar gets to save its work before it is killed.
STOP_GRACE_S = 15.0
ENGINES = ("docker", "podman")
# --ml-engine docker-sdk: the Docker SDK (docker-py, the `docker` extra) talks to the API
# at DOCKER_HOST (a docker daemon, or podman's Docker-compatible API) without any CLI.
SDK_ENGINE = "docker-sdk"
# How long an engine gets to say it answers (a docker client with no daemon fails at once).
ENGINE_PROBE_S = 20.0
# What each engine's `info` prints when its daemon (or, for podman, its storage) answers.
ENGINE_PROBE = {"docker": "{{.ServerVersion}}", "podman": "{{.Version.Version}}"}


class EngineError(ValueError):
    """--ml-image cannot run: no engine answers, or the image is not there; one line."""


@dataclass(frozen=True)
class Volume:
    """One --ml-v SRC:DST[:OPTIONS]; OPTIONS (ro, z, ...) go to the engine unchanged."""

    src: str  # on the host, absolute
    dst: str  # in the sidecar
    options: str = ""

    @property
    def mount(self) -> str:
        return f"{self.src}:{self.dst}" + (f":{self.options}" if self.options else "")


@dataclass(frozen=True)
class SidecarSpec:
    """What run-sl's --ml-* flags say about the user's training program."""

    cmd: list[str]
    entrypoint: list[str] = field(default_factory=list)
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[Volume] = field(default_factory=list)
    image: str | None = None
    name: str | None = None
    engine: str | None = None  # docker | podman, for --ml-image
    keep: bool = False  # keep the container after it exits (--ml-keep)


def parse_volume(text: str) -> Volume:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"--ml-v {text!r} is not SRC:DST or SRC:DST:OPTIONS")
    src = Path(parts[0]).expanduser().resolve()
    if not src.exists():
        # An engine would create it, empty and root-owned: almost always a typo.
        raise ValueError(f"--ml-v {text!r}: {src} does not exist on this host")
    if not parts[1].startswith("/"):
        raise ValueError(f"--ml-v {text!r}: the sidecar path {parts[1]!r} must be absolute")
    return Volume(str(src), parts[1], parts[2] if len(parts) == 3 else "")


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--ml-e {text!r} is not KEY=VALUE")
    return key, value


def _host_path(value: str, volumes: list[Volume]) -> str:
    """Maps a path the program sees (a volume's DST) to the host (its SRC): local runs."""
    for volume in sorted(volumes, key=lambda v: -len(v.dst)):
        dst = volume.dst.rstrip("/")
        if value == volume.dst or value.startswith(dst + "/"):
            return volume.src + value[len(dst):]
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


def _engine_problem(engine: str) -> str | None:
    """Why `engine` cannot run containers now (not installed, no daemon), or None."""
    if not shutil.which(engine):
        return "not installed"
    try:
        probe = subprocess.run([engine, "info", "--format", ENGINE_PROBE[engine]],
                               capture_output=True, text=True, timeout=ENGINE_PROBE_S,
                               stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"`{engine} info` did not answer within {ENGINE_PROBE_S:g} s"
    if probe.returncode == 0 and probe.stdout.strip():
        return None
    lines = [line.strip() for line in (probe.stderr or probe.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"`{engine} info` exited {probe.returncode}"


def select_engine(requested: str | None) -> str:
    """The engine to run --ml-image with: the requested one if it answers, else the first
    of docker and podman that answers (a docker client with no daemon is passed over)."""
    if requested:
        problem = _engine_problem(requested)
        if problem:
            raise EngineError(f"--ml-engine {requested}: {problem}")
        return requested
    problems = {}
    for engine in ENGINES:
        problems[engine] = _engine_problem(engine)
        if problems[engine] is None:
            return engine
    tried = "; ".join(f"{engine}: {problem}" for engine, problem in problems.items())
    raise EngineError(f"no container engine answers for --ml-image ({tried}); install podman "
                      f"(docker/setup-podman.sh) or start the docker daemon, or drop --ml-image "
                      f"to run the sidecar as a local process")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def sdk_client(timeout_s: float | None = ENGINE_PROBE_S):
    """A Docker SDK client for DOCKER_HOST that has answered a ping; EngineError otherwise.
    timeout_s None: no read timeout, for a container's output and exit (silent for hours)."""
    try:
        import docker
    except ImportError:
        docker = None
    # Without the package, `import docker` may find this repository's docker/ folder.
    if not hasattr(docker, "DockerClient"):
        raise EngineError(f"--ml-engine {SDK_ENGINE}: the Docker SDK is not installed "
                          f"(pip install docker==7.1.0, the project's `docker` extra)")
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (DOCKER_HOST unset)"
    try:
        client = docker.from_env(timeout=None if timeout_s is None else int(timeout_s))
        client.ping()
    except docker.errors.DockerException as error:
        raise EngineError(f"--ml-engine {SDK_ENGINE}: no Docker API answers at {host}: "
                          f"{_one_line(error)} (start the daemon, or set DOCKER_HOST, e.g. "
                          f"unix:///run/podman/podman.sock)") from None
    return client


def check_image(engine: str, image: str, client=None) -> None:
    """The image must be there already: pulling from a registry no one can reach would
    only fail late, after retries."""
    if engine == SDK_ENGINE:
        import docker
        try:
            (client or sdk_client()).images.get(image)
        except docker.errors.ImageNotFound:
            where = os.environ.get("DOCKER_HOST", "the docker daemon")
            raise EngineError(f"--ml-image {image}: no such image at {where} (build it, e.g. "
                              f"docker/build-images.sh, or `docker pull {image}` first)") from None
        return
    found = subprocess.run([engine, "image", "inspect", "--format", "{{.Id}}", image],
                           capture_output=True, text=True, timeout=ENGINE_PROBE_S,
                           stdin=subprocess.DEVNULL)
    if found.returncode != 0:
        raise EngineError(f"--ml-image {image}: no such image in {engine} (build it, e.g. "
                          f"docker/build-images.sh, or `{engine} pull {image}` first)")


def prepare_container(spec: SidecarSpec) -> SidecarSpec:
    """The spec with its engine chosen and its image checked; EngineError says what is wrong."""
    if spec.engine == SDK_ENGINE:
        check_image(SDK_ENGINE, spec.image, sdk_client())  # first: the SDK and its API
        return spec
    engine = select_engine(spec.engine)
    check_image(engine, spec.image)
    return replace(spec, engine=engine)


def container_command(spec: SidecarSpec, socket_path: Path, cidfile: Path | None = None) -> list[str]:
    """The docker/podman CLI command that runs the sidecar with the SL socket mounted.

    `--init`: a small init is PID 1 and passes SIGTERM on, so a program without its own
    handler still stops; `--cidfile`: the SL node can stop the container by id."""
    argv = [spec.engine or "docker", "run"] + ([] if spec.keep else ["--rm"]) + [
        "--init", "-v", f"{socket_path.parent}:{CONTAINER_SOCKET_DIR}",
        "-e", f"SWARM_SL_ADDRESS=unix://{CONTAINER_SOCKET_DIR}/{socket_path.name}"]
    if cidfile is not None:
        argv += ["--cidfile", str(cidfile)]
    if spec.name:
        argv += ["--name", spec.name]
    if spec.workdir:
        argv += ["-w", spec.workdir]
    for volume in spec.volumes:
        argv += ["-v", volume.mount]
    for key, value in spec.env.items():
        argv += ["-e", f"{key}={value}"]
    if spec.entrypoint:
        argv += ["--entrypoint", spec.entrypoint[0]]
    argv.append(spec.image)
    return argv + spec.entrypoint[1:] + spec.cmd


def container_config(spec: SidecarSpec, socket_path: Path) -> dict:
    """containers.create() arguments with the same meaning as container_command()'s CLI
    flags: socket directory mounted, volumes with their options, init, removed on exit."""
    return dict(
        image=spec.image, name=spec.name, working_dir=spec.workdir, init=True,
        entrypoint=spec.entrypoint[:1] or None,
        command=(spec.entrypoint[1:] + spec.cmd) or None,  # None: the image's CMD
        environment={"SWARM_SL_ADDRESS": f"unix://{CONTAINER_SOCKET_DIR}/{socket_path.name}",
                     **spec.env},
        volumes=[f"{socket_path.parent}:{CONTAINER_SOCKET_DIR}", *(v.mount for v in spec.volumes)],
        auto_remove=not spec.keep, detach=True, stdin_open=False, tty=False)


class SDKContainer:
    """The sidecar's container through the Docker SDK, shaped like the Popen of the CLI
    path (stdout lines, poll, wait, terminate, kill), so that Sidecar treats both alike."""

    def __init__(self, spec: SidecarSpec, socket_path: Path):
        self._client = sdk_client(timeout_s=None)
        self._code: int | None = None
        self._exited = threading.Event()
        import docker
        try:
            self.container = self._client.containers.create(**container_config(spec, socket_path))
        except docker.errors.DockerException as error:
            raise EngineError(f"--ml-image {spec.image}: cannot create the container: "
                              f"{_one_line(error)}") from None
        self.id = self.container.id
        # Attached and waited on before it starts, as `docker run` does: a short program's
        # first lines and its exit code are not lost, even when it is removed at once.
        # containers.wait() would send its request from the waiting thread, maybe after the
        # exit; the API answers the headers at once, so once _post returns the wait is
        # registered. ("removed" would not do: podman reports exit code 0 for it.)
        self._stream = self.container.attach(stdout=True, stderr=True, stream=True, logs=True)
        api = self._client.api
        self._wait_response = api._post(api._url("/containers/{0}/wait", self.id),
                                        params={"condition": "next-exit"}, stream=True,
                                        timeout=None)
        self._waiter = threading.Thread(target=self._wait_exit, daemon=True, name="ml-wait")
        self._waiter.start()
        try:
            self.container.start()
        except docker.errors.DockerException as error:
            self._remove()
            raise EngineError(f"--ml-image {spec.image}: cannot start the container: "
                              f"{_one_line(error)}") from None
        self.stdout = self._lines()

    def _wait_exit(self) -> None:
        import docker
        try:
            answer = self._client.api._result(self._wait_response, True)
            self._code = int(answer["StatusCode"])
            if answer.get("Error"):
                log.warning("the ML sidecar's container: %s", answer["Error"])
        except (docker.errors.DockerException, OSError, ValueError, KeyError) as error:
            log.warning("waiting for the ML sidecar's container: %s", _one_line(error))
            self._code = 1
        self._exited.set()

    def _lines(self):
        pending = b""
        try:
            for chunk in self._stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace") + "\n"
        except Exception as error:  # the API connection broke: the exit code says the rest
            log.warning("the ML sidecar's output stream ended: %s", _one_line(error))
        if pending:
            yield pending.decode("utf-8", "replace") + "\n"

    def poll(self) -> int | None:
        return self._code if self._exited.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"container {self.id[:12]}", timeout)
        return self._code

    def _call(self, what: str, *args, **kwargs) -> None:
        import docker
        try:
            getattr(self.container, what)(*args, **kwargs)
        except docker.errors.NotFound:
            pass  # already exited and removed
        except docker.errors.DockerException as error:
            log.warning("%s %s: %s", SDK_ENGINE, what, _one_line(error))

    def terminate(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the container's init, SIGKILL after grace_s (the engine's stop)."""
        self._call("stop", timeout=int(grace_s))

    def kill(self) -> None:
        self._call("kill")

    def _remove(self) -> None:
        self._call("remove", force=True)


def _die_with_parent() -> None:
    """Linux: the local sidecar (or the engine's CLI, which passes the signal on to its
    container) gets SIGTERM if its SL node dies, even by SIGKILL."""
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
        self.cidfile: Path | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if spec.image and spec.engine == SDK_ENGINE:
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            log.info("starting the ML sidecar through the Docker SDK at %s: %s",
                     os.environ.get("DOCKER_HOST", "the default socket"),
                     shlex.join(container_command(spec, socket_path)[2:]))
            self.proc = SDKContainer(spec, socket_path)
            self._pump = threading.Thread(target=self._follow, name="ml-log", daemon=True)
            self._pump.start()
            return
        if spec.image:
            self.cidfile = log_path.parent / "ml-sidecar.cid"
            self.cidfile.unlink(missing_ok=True)  # engines refuse an existing cidfile
            argv, env, workdir = container_command(spec, socket_path, self.cidfile), None, None
        else:
            argv, env, workdir = local_command(spec, socket_path)
        if not argv:
            raise ValueError("no ML program to run: give --ml-cmd (and --ml-entrypoint)")
        log.info("starting the ML sidecar: %s", shlex.join(argv))
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

    def _container_id(self) -> str | None:
        if self.cidfile is None:
            return None
        try:
            return self.cidfile.read_text().strip() or None
        except OSError:  # not written yet: the container is still being created
            return None

    def _engine(self, *args: str, timeout_s: float) -> None:
        try:
            subprocess.run([self.spec.engine or "docker", *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as error:
            log.warning("%s %s: %s", self.spec.engine, args[0], error)

    def request_stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM now and SIGKILL after `grace_s` if it still runs; returns at once, so a
        signal handler can call it while the main thread is blocked in wait().

        A container is stopped through its engine (by the id in the cidfile), so that it
        stops even where the CLI would not pass the signal on; its output keeps flowing
        into the log until it has exited."""
        if self.proc.poll() is not None:
            return
        if isinstance(self.proc, SDKContainer):
            threading.Thread(target=self.proc.terminate, name="ml-stop", daemon=True,
                             args=(grace_s,)).start()
            killer = threading.Timer(grace_s + 5, self._kill_if_running)
            killer.daemon = True
            killer.start()
            return
        cid = self._container_id()
        if cid:
            threading.Thread(target=self._engine, name="ml-stop", daemon=True,
                             args=("stop", "--time", str(int(grace_s)), cid),
                             kwargs={"timeout_s": grace_s + 30}).start()
        else:
            self.proc.terminate()
        killer = threading.Timer(grace_s + (5 if cid else 0), self._kill_if_running)
        killer.daemon = True
        killer.start()

    def _kill_if_running(self) -> None:
        if self.proc.poll() is None:
            cid = self._container_id()
            if cid:
                self._engine("kill", cid, timeout_s=30)
            self.proc.kill()

    def stop(self) -> None:
        self.request_stop()
        try:
            self.proc.wait(STOP_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            self._kill_if_running()
