"""`swarm data synth` writes files the loaders read back; `swarm data show` describes them;
errors are one `swarm data: error:` line with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from swarm.data import cli, load_dataset, sha256_of

SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "mnist": (28, 28)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_synth_round_trip_through_the_loader(tmp_path, capsys, name):
    out = tmp_path / "out"
    assert cli.main(["synth", "--format", name, "--out", str(out),
                     "--train", "30", "--test", "12", "--seed", "9"]) == 0
    path_line, sha_line = capsys.readouterr().out.splitlines()
    path = Path(path_line)
    assert path.parent == out and sha_line == f"sha256: {sha256_of(path)}"
    dataset = load_dataset(name, path, sha256=sha256_of(path))
    assert dataset.train_x.shape == (30, *SHAPES[name])
    assert dataset.test_x.shape == (12, *SHAPES[name])


def test_umbrella_swarm_command_runs_synth(tmp_path):
    swarm = Path(sys.executable).parent / "swarm"
    result = subprocess.run([str(swarm), "data", "synth", "--format", "mnist", "--out",
                             str(tmp_path), "--train", "10", "--test", "5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.splitlines()[0])
    assert path == tmp_path / "mnist.npz"
    assert load_dataset("mnist", path).train_y.shape == (10,)


def test_show_prints_shapes_and_class_counts(files, capsys):
    assert cli.main(["show", str(files["cifar10"])]) == 0
    shown = capsys.readouterr().out
    dataset = load_dataset("cifar10", files["cifar10"])
    assert "cifar10 from" in shown and "10 classes" in shown
    assert f"train  x uint8 {dataset.train_x.shape}  y int64 {dataset.train_y.shape}" in shown
    counts = np.bincount(dataset.train_y, minlength=10)
    assert f"class0  {counts[0]:>5}" in shown
    assert cli.main(["show", files["cifar100"].parent.as_uri(), "--format", "cifar100",
                     "--label-mode", "coarse"]) == 0
    assert "20 classes" in capsys.readouterr().out


def test_show_tells_the_format_from_a_directory(files, capsys):
    assert cli.main(["show", str(files["mnist"])]) == 0
    assert capsys.readouterr().out.startswith("mnist from")


def test_errors_are_one_line_and_exit_2(files, tmp_path, capsys):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"not a tarball")
    assert cli.main(["show", str(bad)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"swarm data: error: cifar10: {bad} is truncated or corrupt")
    assert error.count("\n") == 1
    assert cli.main(["show", str(files["mnist"]), "--sha256", "1" * 64]) == 2
    assert "wrong checksum" in capsys.readouterr().err
    assert cli.main(["show", str(tmp_path / "mystery.bin")]) == 2
    assert "pass --format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["synth", "--format", "mnist", "--out", str(tmp_path), "--train", "0"])
    assert usage.value.code == 2
    assert "0 must be at least 1" in capsys.readouterr().err
