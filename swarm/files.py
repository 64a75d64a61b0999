"""Writing files so that a reader (or a restart after a crash) sees the old content or the
new, never half of it: write beside the target, flush to disk, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix) to write to; on success it is
    synced and renamed over `path`, on an exception removed."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> None:
    """Replaces `path`'s content with `data` (str is written as UTF-8) in one step."""
    with atomic_target(path, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
