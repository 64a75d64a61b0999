"""`make demo`'s program end to end: a real swarm of three, baselines, table, report."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from swarm_testing import REPO

REPORT_FILES = ("summary.json", "per_class_accuracy.csv", "accuracy_curves.png",
                "loss_curves.png", "val_acc_per_node.png", "swarm_vs_local.png",
                "val_acc_histogram.png", "train_vs_val_acc.png", "merged_val_acc_per_round.png")


def test_demo_swarm_beats_every_site_alone_and_reports(tmp_path):
    run_dir = tmp_path / "demo-run"
    done = subprocess.run([sys.executable, "examples/demo/run.py", "--run-dir", str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "bit-identical" in done.stdout
    # The swarm line under the live table, from the SN's read model through a swci certificate.
    assert re.search(r"swarm done: 3 node\(s\) finished, last merged round \d+", done.stdout), \
        done.stdout[-3000:]
    metrics = {path.parent.name: json.loads(path.read_text())
               for path in run_dir.glob("*/metrics.json")}
    swarm = [metrics[f"model-{i}"]["val_acc"] for i in (1, 2, 3)]
    local = [metrics[f"local-model-{i}"]["val_acc"] for i in (1, 2, 3)]
    assert all(m["mode"] == "swarm" and m["rounds"] for k, m in metrics.items()
               if k.startswith("model-"))
    assert min(swarm) > max(local) + 0.3, (swarm, local)
    assert min(swarm) > metrics["central-model"]["val_acc"] - 0.1
    for name in REPORT_FILES:
        assert (run_dir / "report" / name).stat().st_size > 0, name
    assert list((run_dir / "report" / "confusion").glob("*.png"))
    assert "centralised" in done.stdout and "hospital-a" in done.stdout
