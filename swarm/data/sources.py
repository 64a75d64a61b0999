"""Where a data set's file comes from: DATA_DIR, a directory, a file or a URL.

``materialize`` turns a job's ``source`` into a local path the readers can open: it
finds the data set's standard file, downloads a URL, checks the SHA-256 when one is
given, and unpacks an archive, all inside one scratch directory that is removed
afterwards unless the caller keeps it. Every failure is one DataError line naming the
file and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import url2pathname, urlopen

from .errors import DataError, reason

Source = str | os.PathLike[str] | None

_DOWNLOAD_TIMEOUT_S = 60
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Spec:
    """A data set's standard file and, for an archive, the folder it unpacks to."""

    name: str  # "cifar10": how messages name the data set
    filename: str  # the standard file looked for in DATA_DIR or a directory
    folder: str | None = None  # the archive's top folder; None: the file is read as is
    marker: str | None = None  # a file in ``folder`` that an extracted copy must have


class Scratch:
    """A scratch directory, made on first use under ``parent`` (default: the system temp dir).

    ``close`` removes it unless ``keep``; it is always a fresh directory, so removing it
    never touches files the caller owns.
    """

    def __init__(self, parent: str | os.PathLike[str] | None, keep: bool) -> None:
        self._parent = parent
        self._keep = keep
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            if self._parent is not None:
                Path(self._parent).mkdir(parents=True, exist_ok=True)
            self._path = Path(tempfile.mkdtemp(prefix="swarm-data-", dir=self._parent))
        return self._path

    @property
    def kept(self) -> Path | None:
        """The directory that stays after ``close``: None unless made and kept."""
        return self._path if self._keep else None

    def close(self) -> None:
        if self._path is not None and not self._keep:
            shutil.rmtree(self._path, ignore_errors=True)


@dataclass(frozen=True)
class Local:
    """What ``materialize`` yields: the file or extracted folder to read, and its origin."""

    path: Path  # the data file (Spec.folder None) or the extracted folder
    shown: str  # how messages name the source: the path or URL given
    scratch: Scratch


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def materialize(spec: Spec, source: Source, *, sha256: str | None = None, keep: bool = False,
                scratch: str | os.PathLike[str] | None = None) -> Iterator[Local]:
    """Yields the local data for ``spec`` from ``source``; see ``locate`` for the sources.

    A file is checked against ``sha256`` when given, then, for an archive, extracted
    into the scratch directory. An already-extracted folder is read in place (it has no
    single file a checksum could apply to, so ``sha256`` is refused for it).
    """
    work = Scratch(scratch, keep)
    try:
        path, shown = locate(spec, source, work)
        if path.is_dir():
            if sha256:
                raise DataError(f"{spec.name}: a SHA-256 was given, but {shown} is an extracted "
                                f"folder; the checksum applies to {spec.filename}")
        else:
            if sha256:
                verify_sha256(spec, path, sha256, shown)
            if spec.folder is not None:
                path = extract(spec, path, work, shown)
        yield Local(path, shown, work)
    finally:
        work.close()


def locate(spec: Spec, source: Source, work: Scratch) -> tuple[Path, str]:
    """The local file or extracted folder ``source`` names, and how messages name it.

    None means the standard file in ``$DATA_DIR``; a directory, the standard file (or
    the extracted folder) in it; a path, that file; ``file://`` URLs are paths, and
    ``http(s)://`` URLs are downloaded into the scratch directory.
    """
    if source is None:
        data_dir = os.environ.get("DATA_DIR")
        if not data_dir:
            raise DataError(f"{spec.name}: expected {spec.filename} in $DATA_DIR, but DATA_DIR "
                            "is not set; set it to the folder holding the file, "
                            "or pass a path or URL")
        found = _in_directory(spec, Path(data_dir), "DATA_DIR")
        return found, str(found)
    text = os.fspath(source)
    url = urlparse(text)
    if url.scheme in ("http", "https"):
        return _download(spec, text, work), text
    if url.scheme == "file":
        path = Path(url2pathname(url.path))
    elif len(url.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise DataError(f"{spec.name}: cannot fetch {text}: only file://, http:// and "
                        "https:// URLs are supported")
    else:
        path = Path(text).expanduser()
    if path.is_dir():
        found = _in_directory(spec, path, None)
        return found, str(found)
    if path.is_file():
        return path, text
    raise DataError(f"{spec.name}: expected {spec.filename} at {path}, but there is no such "
                    "file or directory; put the file there, or pass another path or URL")


def _in_directory(spec: Spec, directory: Path, named_by: str | None) -> Path:
    """The standard file in ``directory``, else an extracted folder there (or ``directory`` itself)."""
    if (directory / spec.filename).is_file():
        return directory / spec.filename
    if spec.folder is not None:
        for folder in (directory / spec.folder, directory):
            if (folder / spec.marker).is_file():
                return folder
    where = [named_by] if named_by else []
    if not directory.is_dir():
        where.append("which does not exist")
    note = f" ({', '.join(where)})" if where else ""
    raise DataError(f"{spec.name}: expected {spec.filename} in {directory}{note}; "
                    "put the file there, or pass a path or URL")


def _download(spec: Spec, url: str, work: Scratch) -> Path:
    target = work.path / spec.filename
    try:
        with urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, _HASH_CHUNK)
    except HTTPError as error:
        raise DataError(f"{spec.name}: could not download {url}: HTTP {error.code} "
                        f"{error.reason}") from None
    except URLError as error:
        raise DataError(f"{spec.name}: could not download {url}: {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise DataError(f"{spec.name}: could not download {url}: "
                        f"{reason(error)}") from None
    return target


def verify_sha256(spec: Spec, path: Path, expected: str, shown: str) -> None:
    """Raises DataError unless the file's SHA-256 is ``expected`` (hex, any case)."""
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise DataError(f"{spec.name}: the SHA-256 given for {shown} is not 64 hex digits: "
                        f"{expected!r}")
    actual = sha256_of(path)
    if actual != want:
        raise DataError(f"{spec.name}: wrong checksum for {shown}: SHA-256 is {actual}, "
                        f"expected {want}; the file is corrupt, truncated or another file")


# tarfile's extraction filters came with Python 3.11.4 (Debian 12 ships 3.11.2).
HAS_TAR_FILTERS = hasattr(tarfile, "data_filter")


def extract_all(tar: tarfile.TarFile, dest: Path, filters: bool = HAS_TAR_FILTERS) -> None:
    """``tar.extractall(dest, filter="data")``, or where Python lacks filters the same
    refusals by hand: only regular files and directories, every one inside ``dest``,
    no set-id bits, owned by whoever extracts (the data sets hold nothing else)."""
    if filters:
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)
    members = []
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(root, member.name))
        if not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"{member.name!r} is a link or special file")
        if os.path.isabs(member.name) or os.path.commonpath([root, target]) != root:
            raise tarfile.TarError(f"{member.name!r} would be extracted outside {root}")
        member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        members.append(member)
    tar.extractall(dest, members=members, numeric_owner=True)


def extract(spec: Spec, archive: Path, work: Scratch, shown: str) -> Path:
    """Unpacks ``archive`` into the scratch directory; returns its ``spec.folder``.

    The "data" filter refuses members that would land outside the scratch directory
    (absolute paths, "..", links out), since the archive may come from a URL.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            extract_all(tar, work.path)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{spec.name}: {shown} is truncated or corrupt "
                        f"({reason(error)}); fetch it again") from None
    except OSError as error:
        raise DataError(f"{spec.name}: could not extract {shown} into {work.path}: "
                        f"{error}") from None
    folder = work.path / spec.folder
    if not (folder / spec.marker).is_file():
        raise DataError(f"{spec.name}: {shown} has no {spec.folder}/{spec.marker}; "
                        f"is it {spec.filename}?")
    return folder
