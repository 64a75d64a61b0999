"""`make demo`: three sites train one model as a swarm, then each alone, and compare.

1. gen-cert makes one site (CA, SN, SL and swci certificates) per hospital, and every
   site trusts the others' CA;
2. a sentinel SN starts on a fresh embedded ledger; three SL nodes start, each running
   `train.py` (a NumPy MLP on scikit-learn's digits) as its ML sidecar through
   `python -m ml_sidecar`. The training set is split by label: each site sees only some
   digits. Their progress is shown live; full logs go to demo-run/logs/;
3. the same program trains each site's share alone (the local baselines), and once on
   all the data (centralised, for reference);
4. a table compares them, and `swarm report` writes summary.json and plots.

Everything lands in demo-run/ (certificates, ledger, logs, metrics.json per node, report).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from swarm.data import load_digits, partition  # noqa: E402
from swarm.lab.launch import LocalSwarm, Site, make_workspace  # noqa: E402
from swarm.network.sn_client import SNClient  # noqa: E402
from swarm.progress import describe  # noqa: E402

SITES = ("hospital-a", "hospital-b", "hospital-c")
TRAIN = HERE / "train.py"
SETTINGS = {"PARTITION": "label", "SEED": "0", "MAX_EPOCHS": "20", "BATCH_SIZE": "16",
            "LEARNING_RATE": "0.1", "SYNC_FREQUENCY": "4", "MIN_PEERS": str(len(SITES))}
DEADLINE_S = 900
FINAL_LINE = "All peers and Swarm training rounds finished"
console = Console()


@dataclass
class NodeStatus:
    """What the demo shows for one SL node, read off its output."""

    site: str
    state: str = "starting"
    epoch: int = 0
    rounds: int = 0
    merged_acc: float | None = None
    last_round_s: float | None = None
    lines: list[str] = field(default_factory=list)

    def read_outcomes(self, records: list[dict]) -> None:
        """The SL node's round records (rounds.jsonl): the last merged round's time."""
        merged = [r for r in records if r["status"] == "merged"]
        if merged:
            self.last_round_s = merged[-1]["control_s"] + merged[-1]["exchange_s"]

    def read(self, line: str) -> None:
        self.lines.append(line)
        if match := re.search(r"Epoch (\d+): .*val_acc ([\d.]+)", line):
            self.epoch, self.state = int(match.group(1)), "training"
        elif match := re.search(r"Round (\d+) merged model: val_acc ([\d.]+)", line):
            self.rounds, self.merged_acc = int(match.group(1)), float(match.group(2))
        elif "waiting for peers" in line:
            self.state = "waiting for peers"
        elif "waiting for the swarm to finish" in line:
            self.state = "done, serving rounds"
        elif FINAL_LINE in line:
            self.state = "finished"


class SwarmLine:
    """The swarm's one-line progress (round, who is missing, for how long), from the SN's
    read model through an administrator (swci) certificate; refreshed once a second."""

    def __init__(self, site: Site, sn_api_port: int):
        self._sn = SNClient(f"127.0.0.1:{sn_api_port}", site.material("swci"), timeout_s=2.0,
                            retry_s=0.0)
        self._at = 0.0
        self.text = ""

    def refresh(self) -> str:
        if time.monotonic() - self._at >= 1.0:
            self._at = time.monotonic()
            try:
                self.text = describe(self._sn.view(rounds=3, events=1))
            except Exception:  # noqa: BLE001 - the SN may still be starting; keep the last line
                pass
        return self.text

    def close(self) -> None:
        self._sn.close()


def progress_table(nodes: dict[str, NodeStatus], started: float, swarm_line: str = "") -> Table:
    table = Table(title=f"Swarm training ({time.monotonic() - started:.0f} s)",
                  caption=swarm_line or None, caption_justify="left")
    for column in ("SL node", "site", "state", "epoch", "sync rounds", "merged model acc",
                   "last round"):
        table.add_column(column, justify="left" if column in ("SL node", "site", "state")
                         else "right")
    for name, node in nodes.items():
        table.add_row(name, node.site, node.state, f"{node.epoch}/{SETTINGS['MAX_EPOCHS']}",
                      str(node.rounds),
                      "" if node.merged_acc is None else f"{node.merged_acc:.3f}",
                      "" if node.last_round_s is None else f"{node.last_round_s * 1000:.0f} ms")
    return table


def make_sites(run_dir: Path) -> None:
    """One gen-cert site per hospital (site-I in the workspace), all trusting each other."""
    sites = make_workspace(run_dir / "workspace", len(SITES))
    for site, hospital in zip(sites, SITES):
        console.print(f"  gen-cert -e {site.name} -i {site.index}   ({hospital}: CA, sn, sl, "
                      f"swci certificates in {site.cert_dir})")


def run_swarm(run_dir: Path) -> dict[str, NodeStatus]:
    nodes = {f"sl-{i}": NodeStatus(site) for i, site in enumerate(SITES, start=1)}

    def on_line(name: str, line: str) -> None:
        if name in nodes:
            nodes[name].read(line)

    # The launcher library: sentinel SN, one SL node per site, each running train.py as
    # its ML sidecar through `python -m ml_sidecar`; every process's output in logs/.
    swarm = LocalSwarm(run_dir, len(SITES), [sys.executable, "-m", "ml_sidecar", TRAIN.name],
                       env={**SETTINGS, "DATA_DIR": run_dir / "data"}, sidecar_dir=HERE,
                       certs=run_dir / "workspace", on_line=on_line)
    logs = swarm.logs
    try:
        started = time.monotonic()
        try:
            swarm.start()
        except AssertionError as error:  # the sentinel died or never served
            raise SystemExit(f"the sentinel did not start; see {logs / 'sn-1.log'}\n{error}")
        console.print(f"  run-sn --sentinel: ready in {time.monotonic() - started:.1f} s "
                      f"(embedded ledger in {run_dir / 'sn-1'})")
        started = time.monotonic()
        swarm_line = SwarmLine(swarm.sites[0], swarm.sn_api_port)
        with Live(progress_table(nodes, started), console=console, refresh_per_second=4) as live:

            def tick() -> None:
                for i, node in enumerate(nodes.values()):
                    node.read_outcomes(swarm.outcomes(i))
                live.update(progress_table(nodes, started, swarm_line.refresh()))

            try:
                codes = swarm.wait(DEADLINE_S, tick=tick)
            except TimeoutError:
                raise SystemExit(f"the swarm did not finish within {DEADLINE_S} s; "
                                 f"logs in {logs}") from None
            tick()
        swarm_line.close()
        if not console.is_terminal:
            console.line()  # a live display in a log ends without one
        failed = [name for name, code in zip(nodes, codes) if code != 0]
        if failed:
            name = failed[0]
            tail = "\n".join(nodes[name].lines[-15:])
            raise SystemExit(f"{name} failed; last lines of its log ({logs / name}.log):\n{tail}")
    finally:
        swarm.stop()
    return nodes


def run_baselines(run_dir: Path) -> None:
    """Each site's share alone, and all data in one place, in parallel (same program)."""
    jobs = {f"local-{i}": {"NODE_INDEX": str(i - 1), "NUM_NODES": str(len(SITES)),
                           "MODEL_DIR": str(run_dir / f"local-model-{i}")}
            for i in range(1, len(SITES) + 1)}
    jobs["central"] = {"NODE_INDEX": "0", "NUM_NODES": "1", "NODE_NAME": "central",
                       "MODEL_DIR": str(run_dir / "central-model")}
    procs = {}
    for name, env in jobs.items():
        log = (run_dir / "logs" / f"{name}.log").open("w")
        procs[name] = subprocess.Popen([sys.executable, str(TRAIN), "--local"], stdout=log,
                                       stderr=subprocess.STDOUT,
                                       env={**os.environ, **SETTINGS, **env})
    with console.status("training the local baselines and the centralised reference"):
        failed = [name for name, proc in procs.items() if proc.wait(DEADLINE_S) != 0]
    if failed:
        raise SystemExit(f"{', '.join(failed)} failed; see {run_dir / 'logs'}")


def metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def results_table(run_dir: Path) -> Table:
    table = Table(title="Held-out accuracy on all ten digits (400 test images)")
    for column in ("site", "digits it holds", "training samples", "local only", "swarm"):
        table.add_column(column, justify="left" if column in ("site", "digits it holds")
                         else "right")
    labels = load_digits().train_y
    for i, site in enumerate(SITES, start=1):
        swarm, local = metrics(run_dir / f"model-{i}"), metrics(run_dir / f"local-model-{i}")
        held = np.unique(labels[partition(labels, len(SITES), i - 1, scheme="label")])
        table.add_row(site, ", ".join(map(str, held)), str(local["samples"]["train"]),
                      f"{local['val_acc']:.3f}", f"[bold green]{swarm['val_acc']:.3f}")
    central = metrics(run_dir / "central-model")
    table.add_row("[dim]centralised (all data in one place)", "[dim]0-9",
                  f"[dim]{central['samples']['train']}", f"[dim]{central['val_acc']:.3f}", "")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "demo-run",
                        help="where everything goes; emptied first (default: demo-run/)")
    run_dir = parser.parse_args(argv).run_dir.resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    started = time.monotonic()
    console.rule("[bold]swarm demo: three hospitals, one model, no pooled data")
    console.print("Each site holds only some of the digits (split by label). Alone, a site "
                  "can only learn its own digits; as a swarm they learn all ten.\n")
    make_sites(run_dir)
    nodes = run_swarm(run_dir)
    digests = {name: next((l.split("SHA-256:")[1].strip() for l in node.lines
                           if "Final weights SHA-256:" in l), "?") for name, node in nodes.items()}
    same = len(set(digests.values())) == 1 and "?" not in digests.values()
    console.print(f"  all three nodes hold {'[green]bit-identical' if same else '[red]DIFFERENT'}"
                  f"[/] final weights (SHA-256 {next(iter(digests.values()))[:16]}…)")
    run_baselines(run_dir)
    console.print(results_table(run_dir))
    report = run_dir / "report"
    done = subprocess.run([sys.executable, "-m", "swarm.cli.main", "report", "--results-root",
                           str(run_dir), "--out-dir", str(report)], capture_output=True, text=True)
    if done.returncode != 0:
        console.print(f"[red]swarm report failed:[/] {done.stderr.strip()}")
        return 1
    console.print(Group(f"Report (summary.json, per_class_accuracy.csv, plots): {report}",
                        f"Logs: {run_dir / 'logs'}   Ledger: {run_dir / 'sn-1'}",
                        f"Done in {time.monotonic() - started:.0f} s."))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
