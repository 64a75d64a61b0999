"""Helpers the tests share: certificates made with gen-cert, real node processes.

The process handling, sites and command lines are the one launcher library,
swarm.lab.launch (also used by the examples, the benchmarks and the lab); what is
here only adapts it to the tests' fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from certs.gen_cert import main as gen_cert
from swarm.lab import launch
from swarm.lab.launch import READY, REPO, NodeProcess, Site, free_port, run_sn_argv, share_cas

__all__ = ["READY", "REPO", "SN", "NodeProcess", "Site", "free_port", "make_sites",
           "run_sl_argv", "run_sn_argv"]


def make_sites(root: Path, names_and_indices: list[tuple[str, int]]) -> list[Site]:
    """Runs gen-cert per site (in this process: fast), then shares every CA certificate
    into every capath."""
    sites = []
    for name, index in names_and_indices:
        assert gen_cert(["-e", name, "-i", str(index), "--out", str(root)]) == 0
        sites.append(Site(name, index, root / name / "cert"))
    share_cas(sites)
    return sites


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
    return launch.run_sl_argv(site, sn.api_port, data_dir, fs_port, ml_cmd, ml_env, *extra)


def commit_together(round_number: int, *commits):
    """CommitMerged from several SL clients at once, as nodes do: the ledger records a
    round's merged digest only once a strict majority of its participants committed it
    (each reply waits for that). commits: (SNClient, digest) pairs; returns the replies."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commits)) as pool:
        futures = [pool.submit(client.commit_merged, round_number, digest)
                   for client, digest in commits]
        return [f.result() for f in futures]
