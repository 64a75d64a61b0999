"""Writing files so that a reader (or a restart after a crash) sees the old content or the
new, never half of it: write beside the target, fsync, rename over it, fsync the folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes a rename in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, mode: int = 0o600) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix, for writers that go by it) to
    write to; on success it is synced and renamed over `path`, on an exception removed.

    The temporary file is created 0600 (mkstemp), so a key is never readable by others,
    not even briefly; `mode` is applied before the rename.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o600) -> Path:
    """Replaces `path`'s content with `data` (str is written as UTF-8) all or nothing."""
    with atomic_target(path, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)
