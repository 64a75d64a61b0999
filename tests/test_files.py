"""swarm.files: a file is replaced whole or not at all."""

from __future__ import annotations

import pytest

from swarm.files import atomic_target, atomic_write


def test_atomic_write_replaces_the_content_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, "old")
    atomic_write(path, b"new", mode=0o600)
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "model.npz"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_target(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
