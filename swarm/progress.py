"""One line that says where a swarm is: which round, who it waits for and for how long.

`describe(snapshot)` renders an SN's `swarm.swarm_view.Snapshot` as that line.
`ProgressLine` keeps it current from a source (e.g. `SNClient.view`): on a terminal the
line updates in place (rich); otherwise it prints a plain line, prefixed `progress:`,
when the line changes, at most every `plain_every_s` seconds, so logs stay readable.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

from swarm.swarm_view import Snapshot

PREFIX = "progress: "


def _names(ids: list[str], most: int = 4) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def describe(snap: Snapshot) -> str:
    """E.g. 'round 4: waiting 12 s for beta/sl-1 (2 of min 3 checked in) | round 3: 0.8 s'."""
    session = snap.session
    if not session.configured:
        return "waiting for the first SL node to configure the session"
    last = next((r for r in reversed(snap.rounds) if r.state == "merged"), None)
    tail = ""
    if last is not None:
        took = (last.merged_at - last.opened_at
                if last.merged_at is not None and last.opened_at is not None else None)
        tail = f" | round {last.round}: {took:.1f} s" if took is not None else ""
        if last.dropped:
            tail += f", without {_names(sorted(last.dropped), 2)}"
    if session.swarm_done:
        return (f"swarm done: {session.finished_count} node(s) finished, last merged round "
                f"{snap.latest_merged_round}{tail}")
    wait = snap.current
    if wait is None:
        return f"last merged round {snap.latest_merged_round}{tail}"
    checked = len(wait.checked_in)
    if checked == 0:
        return f"round {wait.round}: training (no check-in yet){tail}"
    since = f" {wait.waiting_s:.0f} s" if wait.waiting_s is not None else ""
    if wait.missing:
        who = f"for {_names(wait.missing)}"
    elif wait.short_by:
        who = f"for {wait.short_by} more node(s) to join"
    else:
        who = "for the seal"
    return (f"round {wait.round}: waiting{since} {who} ({checked} of min "
            f"{session.min_peers} checked in){tail}")


class ProgressLine:
    """Shows `describe(source())` until stopped; `source` errors show as the line."""

    def __init__(self, source: Callable[[], Snapshot], interval_s: float = 1.0,
                 plain_every_s: float = 10.0, stream=None, tty: bool | None = None):
        self._source = source
        self._interval_s = interval_s
        self._plain_every_s = plain_every_s
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last = ""

    def text(self) -> str:
        try:
            return describe(self._source())
        except Exception as error:  # the SN may be starting, restarting or gone: say so
            return f"no status from the SN ({str(error).splitlines()[0][:120]})"

    def start(self) -> ProgressLine:
        self._thread = threading.Thread(target=self._run, name="progress-line", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        if self._tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            console = Console(file=self._stream)
            original = sys.stderr
            with Live(Text(PREFIX), console=console, refresh_per_second=4, transient=True,
                      redirect_stderr=self._stream is original, redirect_stdout=False) as live:
                # Log lines go above the line, not through it: the handlers writing to
                # the terminal write through the live display while it runs.
                swapped = [h for h in logging.getLogger().handlers
                           if isinstance(h, logging.StreamHandler) and h.stream is original
                           and sys.stderr is not original]
                for handler in swapped:
                    handler.setStream(sys.stderr)
                try:
                    while not self._stop.is_set():
                        self.last = self.text()
                        live.update(Text(PREFIX + self.last, no_wrap=True, overflow="ellipsis"))
                        self._stop.wait(self._interval_s)
                finally:
                    for handler in swapped:
                        handler.setStream(original)
            return
        printed_at = 0.0
        printed = ""
        while not self._stop.is_set():
            self.last = self.text()
            now = time.monotonic()
            if self.last != printed and now - printed_at >= self._plain_every_s:
                print(PREFIX + self.last, file=self._stream, flush=True)
                printed, printed_at = self.last, now
            self._stop.wait(self._interval_s)
