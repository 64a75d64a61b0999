"""The checked-in gRPC modules are what the .proto files generate."""

import subprocess
import sys

from swarm_testing import REPO


def test_generated_protos_match_their_source():
    result = subprocess.run([sys.executable, "-m", "swarm.protos.build", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
