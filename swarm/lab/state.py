"""The sweep's state: one SQLite database (WAL) in the output folder.

It holds the plan (experiments, the tasks they list, the runs that asked for them) and
every task's state. A worker claims a pending task in one IMMEDIATE transaction (the only
queue there is), keeps a heartbeat while it runs, and records the result or the error;
every attempt is also a row of `attempts`. A task whose worker died (its pid gone on this
host) or whose heartbeat went stale is reclaimed: pending again, or failed when it has used
its attempts. Nothing finished is ever redone.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from swarm.lab.grid import Experiment, Plan, canonical_json

DB_NAME = "sweep.sqlite"
SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 60_000
ERROR_CHARS = 20_000  # an error's text is kept up to this many characters (its tail)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments(
    name TEXT PRIMARY KEY, source TEXT NOT NULL, task TEXT NOT NULL, axes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    signature TEXT UNIQUE NOT NULL,
    task TEXT NOT NULL,
    backend TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error_kind TEXT,
    error TEXT,
    pid INTEGER,
    pid_start TEXT,
    host TEXT,
    heartbeat REAL,
    started REAL,
    finished REAL,
    wall_s REAL,
    result TEXT,
    done_seq INTEGER);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS members(
    experiment TEXT NOT NULL, signature TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY(experiment, signature));
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, max_attempts INTEGER NOT NULL, argv TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_tasks(
    run INTEGER NOT NULL, signature TEXT NOT NULL, PRIMARY KEY(run, signature));
CREATE TABLE IF NOT EXISTS attempts(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    signature TEXT NOT NULL, attempt INTEGER NOT NULL, pid INTEGER, host TEXT,
    started REAL, finished REAL, outcome TEXT NOT NULL, error_kind TEXT, error TEXT);
"""


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class FailureKind(StrEnum):
    """Why an attempt did not produce a result."""

    EXCEPTION = "exception"  # the task function raised
    BAD_RESULT = "bad_result"  # it returned something other than a JSON-able mapping
    WORKER_DIED = "worker_died"  # the process running it exited or was killed
    HEARTBEAT_STALE = "heartbeat_stale"  # no heartbeat for longer than the limit
    TIMEOUT = "timeout"  # it ran longer than --task-timeout


class StateError(RuntimeError):
    """The output folder holds no sweep, or one this version cannot read."""


@dataclass(frozen=True)
class Claim:
    """A task a worker has claimed: attempt number `attempt` (1-based)."""

    signature: str
    task: str
    backend: str
    params: dict[str, Any]
    attempt: int
    pid: int


@dataclass(frozen=True)
class TaskRow:
    seq: int
    signature: str
    task: str
    backend: str
    params: dict[str, Any]
    state: TaskState
    attempts: int
    error_kind: str | None
    error: str | None
    pid: int | None
    host: str | None
    heartbeat: float | None
    started: float | None
    finished: float | None
    wall_s: float | None
    result: dict[str, Any] | None
    done_seq: int | None


@dataclass(frozen=True)
class Counts:
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.done + self.failed


@dataclass(frozen=True)
class AttemptRow:
    id: int
    signature: str
    attempt: int
    pid: int | None
    outcome: str  # a TaskState value (done, failed) or "retry"
    error_kind: str | None
    error: str | None
    started: float | None
    finished: float | None


HOST = socket.gethostname()


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (so a reused pid is not taken for the old one),
    or None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def pid_alive(pid: int, start: str | None) -> bool:
    """Whether `pid` on this host is still the process that claimed (zombies are dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def _tail(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else "…" + text[-ERROR_CHARS:]


class State:
    """One connection to an output folder's database (one per process or thread)."""

    def __init__(self, out_dir: str | Path, *, create: bool = False):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        if not create and not self.path.exists():
            raise StateError(f"{self.out_dir}: no sweep here (no {DB_NAME})")
        if create:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                  isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if create:
            with self.transaction():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                                (SCHEMA_VERSION,))
        try:
            version = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as error:  # not (yet) a sweep's database
            self.db.close()
            raise StateError(f"{self.path}: not a sweep's state ({error})") from None
        if version is None or version[0] != SCHEMA_VERSION:
            raise StateError(f"{self.path}: sweep state of schema {version and version[0]!r},"
                             f" this version reads {SCHEMA_VERSION!r}")

    def close(self) -> None:
        self.db.close()

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, tb):
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
            return False

    def transaction(self) -> "State._Tx":
        return State._Tx(self.db)

    # ---- planning -------------------------------------------------------------------

    def begin_run(self, experiments: list[Experiment], plan: Plan, *, max_attempts: int,
                  argv: list[str], retry_failed: bool = False) -> int:
        """Adds the plan (tasks already known keep their state) and opens a run over it.

        Failed tasks with attempts left under `max_attempts` go back to pending; with
        `retry_failed`, every failed task does, with its attempts counted from zero.
        """
        now = time.time()
        with self.transaction() as db:
            for experiment in experiments:
                db.execute("INSERT OR REPLACE INTO experiments VALUES (?,?,?,?)",
                           (experiment.name, experiment.source, experiment.task,
                            canonical_json(experiment.axes)))
            for task in plan.tasks:
                db.execute("INSERT OR IGNORE INTO tasks(signature, task, backend, params) "
                           "VALUES (?,?,?,?)", (task.signature, task.task, task.backend,
                                                json.dumps(task.params, sort_keys=True)))
            for name, sigs in plan.members.items():
                base = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM members "
                                  "WHERE experiment=?", (name,)).fetchone()[0]
                for position, sig in enumerate(sigs):
                    db.execute("INSERT OR IGNORE INTO members VALUES (?,?,?)",
                               (name, sig, base + position))
            run = db.execute("INSERT INTO runs(started, pid, host, max_attempts, argv) "
                             "VALUES (?,?,?,?,?)", (now, os.getpid(), HOST, max_attempts,
                                                    json.dumps(argv))).lastrowid
            db.executemany("INSERT OR IGNORE INTO run_tasks VALUES (?,?)",
                           [(run, task.signature) for task in plan.tasks])
            if retry_failed:
                db.execute("UPDATE tasks SET state='pending', attempts=0 WHERE state='failed' "
                           "AND signature IN (SELECT signature FROM run_tasks WHERE run=?)",
                           (run,))
            db.execute("UPDATE tasks SET state='pending' WHERE state='failed' AND attempts<? "
                       "AND signature IN (SELECT signature FROM run_tasks WHERE run=?)",
                       (max_attempts, run))
        return run

    def max_attempts(self, run: int) -> int:
        return self.db.execute("SELECT max_attempts FROM runs WHERE id=?", (run,)).fetchone()[0]

    # ---- the claim and its outcome ------------------------------------------------------

    def claim(self, run: int, pid: int | None = None) -> Claim | None:
        """Takes the run's first pending task for process `pid` (default: this one)."""
        pid = os.getpid() if pid is None else pid
        now = time.time()
        with self.transaction() as db:
            row = db.execute(
                "SELECT t.signature, t.task, t.backend, t.params, t.attempts FROM tasks t "
                "JOIN run_tasks r ON r.signature=t.signature AND r.run=? "
                "WHERE t.state='pending' ORDER BY t.seq LIMIT 1", (run,)).fetchone()
            if row is None:
                return None
            sig, task, backend, params, attempts = row
            db.execute("UPDATE tasks SET state='running', attempts=?, pid=?, pid_start=?, "
                       "host=?, heartbeat=?, started=? WHERE signature=?",
                       (attempts + 1, pid, process_start(pid), HOST, now, now, sig))
        return Claim(sig, task, backend, json.loads(params), attempts + 1, pid)

    def heartbeat(self, claims: list[Claim]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE tasks SET heartbeat=? WHERE signature=? AND state='running'"
                           " AND pid=? AND attempts=?",
                           [(now, c.signature, c.pid, c.attempt) for c in claims])

    def _log_attempt(self, db, claim: Claim, started: float | None, outcome: str,
                     kind: str | None, error: str | None) -> None:
        db.execute("INSERT INTO attempts(signature, attempt, pid, host, started, finished, "
                   "outcome, error_kind, error) VALUES (?,?,?,?,?,?,?,?,?)",
                   (claim.signature, claim.attempt, claim.pid, HOST, started, time.time(),
                    outcome, kind, error))

    def finish(self, claim: Claim, result: dict[str, Any], wall_s: float) -> bool:
        """Records the result; False when the task was already done (a reclaimed attempt
        that finished after all: the first result stands)."""
        now = time.time()
        with self.transaction() as db:
            state = db.execute("SELECT state FROM tasks WHERE signature=?",
                               (claim.signature,)).fetchone()[0]
            self._log_attempt(db, claim, now - wall_s, TaskState.DONE, None, None)
            if state == TaskState.DONE:
                return False
            seq = db.execute("SELECT COALESCE(MAX(done_seq), 0) + 1 FROM tasks").fetchone()[0]
            db.execute("UPDATE tasks SET state='done', result=?, wall_s=?, finished=?, "
                       "pid=NULL, pid_start=NULL, heartbeat=NULL, error_kind=NULL, error=NULL,"
                       " done_seq=? WHERE signature=?",
                       (json.dumps(result, sort_keys=True, allow_nan=True), wall_s, now, seq,
                        claim.signature))
        return True

    def fail(self, claim: Claim, kind: FailureKind, error: str, max_attempts: int,
             wall_s: float | None = None) -> TaskState:
        """Records a failed attempt: the task is pending again, or failed when its attempts
        are used up. Returns the state it is left in."""
        now = time.time()
        error = _tail(error)
        with self.transaction() as db:
            row = db.execute("SELECT state, attempts, pid FROM tasks WHERE signature=?",
                             (claim.signature,)).fetchone()
            left = (TaskState.FAILED if claim.attempt >= max_attempts else TaskState.PENDING)
            self._log_attempt(db, claim, None if wall_s is None else now - wall_s,
                              "retry" if left == TaskState.PENDING else TaskState.FAILED,
                              kind, error)
            if row[0] != TaskState.RUNNING or row[1] != claim.attempt or row[2] != claim.pid:
                return TaskState(row[0])  # reclaimed meanwhile: that verdict stands
            seq = None
            if left == TaskState.FAILED:
                seq = db.execute("SELECT COALESCE(MAX(done_seq), 0) + 1 FROM tasks").fetchone()[0]
            db.execute("UPDATE tasks SET state=?, error_kind=?, error=?, finished=?, wall_s=?,"
                       " pid=NULL, pid_start=NULL, heartbeat=NULL, done_seq=? "
                       "WHERE signature=?",
                       (left, kind, error, now, wall_s, seq, claim.signature))
        return left

    def release(self, claim: Claim) -> None:
        """Gives an interrupted claim back without counting the attempt (Ctrl-C)."""
        with self.transaction() as db:
            db.execute("UPDATE tasks SET state='pending', attempts=attempts-1, pid=NULL, "
                       "pid_start=NULL, heartbeat=NULL WHERE signature=? AND state='running' "
                       "AND pid=? AND attempts=?", (claim.signature, claim.pid, claim.attempt))

    def reclaim(self, max_attempts: int, stale_after: float,
                dead_pids: dict[int, str] | None = None) -> list[tuple[str, FailureKind]]:
        """Running tasks whose process is gone from this host, or whose heartbeat is older
        than `stale_after` seconds, become pending (or failed, attempts used up).

        `dead_pids` maps pids the caller saw exit to a description of how they exited.
        """
        now = time.time()
        dead_pids = dead_pids or {}
        found = []
        rows = self.db.execute("SELECT signature, task, backend, params, attempts, pid, "
                               "pid_start, host, heartbeat, started FROM tasks "
                               "WHERE state='running'").fetchall()
        for sig, task, backend, params, attempts, pid, start, host, beat, started in rows:
            claim = Claim(sig, task, backend, json.loads(params), attempts, pid)
            if pid in dead_pids and host == HOST:
                kind, why = FailureKind.WORKER_DIED, dead_pids[pid]
            elif host == HOST and pid is not None and not pid_alive(pid, start):
                kind, why = FailureKind.WORKER_DIED, f"worker pid {pid} is gone"
            elif beat is not None and now - beat > stale_after:
                kind, why = (FailureKind.HEARTBEAT_STALE,
                             f"no heartbeat from pid {pid} on {host} for {now - beat:.0f} s")
            else:
                continue
            self.fail(claim, kind, why, max_attempts,
                      None if started is None else now - started)
            found.append((sig, kind))
        return found

    # ---- reading --------------------------------------------------------------------

    def counts(self, run: int | None = None) -> Counts:
        if run is None:
            rows = self.db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        else:
            rows = self.db.execute(
                "SELECT t.state, COUNT(*) FROM tasks t JOIN run_tasks r "
                "ON r.signature=t.signature AND r.run=? GROUP BY t.state", (run,))
        return Counts(**{state: n for state, n in rows})

    def tasks(self, *, run: int | None = None, experiment: str | None = None) -> list[TaskRow]:
        query = ("SELECT t.seq, t.signature, t.task, t.backend, t.params, t.state, t.attempts,"
                 " t.error_kind, t.error, t.pid, t.host, t.heartbeat, t.started, t.finished, "
                 "t.wall_s, t.result, t.done_seq FROM tasks t")
        args: tuple = ()
        if run is not None:
            query += " JOIN run_tasks r ON r.signature=t.signature AND r.run=?"
            args = (run,)
        elif experiment is not None:
            query += " JOIN members m ON m.signature=t.signature AND m.experiment=?"
            args = (experiment,)
        else:  # every planned task: those some experiment lists
            query += " WHERE t.signature IN (SELECT signature FROM members)"
        query += (" ORDER BY m.position" if experiment is not None and run is None
                  else " ORDER BY t.seq")
        return [self._row(row) for row in self.db.execute(query, args)]

    def task(self, signature: str) -> TaskRow | None:
        row = self.db.execute(
            "SELECT seq, signature, task, backend, params, state, attempts, error_kind, error,"
            " pid, host, heartbeat, started, finished, wall_s, result, done_seq FROM tasks "
            "WHERE signature=?", (signature,)).fetchone()
        return None if row is None else self._row(row)

    def running(self) -> list[TaskRow]:
        return [self._row(row) for row in self.db.execute(
            "SELECT seq, signature, task, backend, params, state, attempts, error_kind, error,"
            " pid, host, heartbeat, started, finished, wall_s, result, done_seq FROM tasks "
            "WHERE state='running' ORDER BY seq")]

    @staticmethod
    def _row(row) -> TaskRow:
        values = list(row)
        values[4] = json.loads(values[4])
        values[5] = TaskState(values[5])
        values[15] = None if values[15] is None else json.loads(values[15])
        return TaskRow(*values)

    def memberships(self) -> dict[str, list[str]]:
        """signature -> the experiments listing it."""
        out: dict[str, list[str]] = {}
        for exp, sig in self.db.execute("SELECT experiment, signature FROM members "
                                        "ORDER BY experiment"):
            out.setdefault(sig, []).append(exp)
        return out

    def experiments(self) -> list[tuple[str, str]]:
        """(name, source file) of every experiment planned here."""
        return list(self.db.execute("SELECT name, source FROM experiments ORDER BY name"))

    def attempts_since(self, last_id: int) -> Iterator[AttemptRow]:
        for row in self.db.execute("SELECT id, signature, attempt, pid, outcome, error_kind, "
                                   "error, started, finished FROM attempts WHERE id>? "
                                   "ORDER BY id", (last_id,)):
            yield AttemptRow(*row)

    def last_attempt_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM attempts").fetchone()[0]
