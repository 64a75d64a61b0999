"""The umbrella `swarm` command runs the installed programs by verb."""

import subprocess
import sys

from swarm_testing import REPO


def swarm(*args: str):
    return subprocess.run([sys.executable, "-m", "swarm.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_a_verb_runs_its_program(tmp_path):
    result = swarm("cert", "-e", "umbrella", "-i", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "umbrella" / "cert" / "sl-4-cert.pem").exists()


def test_help_lists_the_verbs_and_an_unknown_verb_is_named():
    listing = swarm("--help")
    assert listing.returncode == 0
    for verb in ("cert", "sn", "stop"):
        assert f"  {verb} " in listing.stdout
    unknown = swarm("teleport")
    assert unknown.returncode == 2
    assert "unknown verb 'teleport'" in unknown.stderr
