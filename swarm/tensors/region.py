"""A flat weight vector in shared memory, between a sidecar and its SL node on one host.

The sidecar creates a file in /dev/shm (mode 0600, space reserved up front) and
offers its name, size and a random nonce in its Hello; the SL node maps the file of
that name in its own /dev/shm only if it is a regular file owned by the node's user,
readable by no one else, of the offered size, and holds the nonce: then both map the
same memory (a container with its own /dev/shm, another user or another host simply
cannot find it, and the two fall back to the socket). Once the node has mapped it,
the sidecar unlinks the name, so the memory goes away with the last of the two.

The file: one control page, then the data.

    0   magic      16 bytes  b"swarm-region-v1\\0"
    16  nonce      16 bytes
    32  up_seq     u64 LE    the sidecar's last call whose update is in the data
    40  down_seq   u64 LE    the SL node's last call whose merged weights are there
    4096 data      the flat vector (one model's bytes)

Each call moves a sequence number, not bytes: the writer fills the data, then stores
the call's seq in its control word, then makes the call (a syscall on the socket, so
the other process sees the bytes before the call); the reader checks the word.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
import stat
import struct
from pathlib import Path

import numpy as np

from .layout import WeightsError

DEFAULT_DIR = "/dev/shm"
DIR_ENV = "SWARM_SHM_DIR"  # where both sides look for regions (tests, unusual hosts)
MAGIC = b"swarm-region-v1\0"
NONCE_BYTES = 16
DATA_OFFSET = 4096  # page-aligned data: aligned numpy views, whole pages to map
ALIGN = 64
_UP, _DOWN = 32, 40
_NAME = re.compile(r"swarm-region-[0-9]+-[0-9a-f]{16}")


class RegionError(WeightsError):
    """A region that cannot be made, found or used; the message says which and why."""


def region_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


class SharedRegion:
    """One mapped region file. `create` is the sidecar's side, `attach` the SL node's."""

    def __init__(self, name: str, path: Path, mm: mmap.mmap, nonce: bytes):
        self.name = name
        self.path = path
        self.size = len(mm)
        self.nonce = nonce
        self._mm = mm

    @property
    def data_bytes(self) -> int:
        return self.size - DATA_OFFSET

    # ---- making and finding ------------------------------------------------------

    @classmethod
    def create(cls, data_bytes: int, directory: Path | None = None) -> SharedRegion:
        """A new region with room for `data_bytes`; RegionError when the directory is
        missing or full (the caller then uses the socket)."""
        directory = Path(directory or region_dir())
        if data_bytes < 0:
            raise RegionError(f"a region cannot hold {data_bytes} bytes")
        name = f"swarm-region-{os.getpid()}-{secrets.token_hex(8)}"
        path = directory / name
        size = DATA_OFFSET + data_bytes
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as error:
            raise RegionError(f"cannot create {path}: {error.strerror}") from None
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            try:
                # Reserve the pages now: a full tmpfs (a container's 64 MB /dev/shm) must
                # fail here, not later as SIGBUS when a page is first touched.
                os.posix_fallocate(fd, 0, size)
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as error:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise RegionError(f"cannot make a {size}-byte region at {path}: "
                              f"{error.strerror}") from None
        os.close(fd)  # the mapping keeps the memory
        nonce = secrets.token_bytes(NONCE_BYTES)
        mm[:len(MAGIC)] = MAGIC
        mm[len(MAGIC):_UP] = nonce
        return cls(name, path, mm, nonce)

    @classmethod
    def attach(cls, name: str, size: int, nonce: bytes,
               directory: Path | None = None) -> SharedRegion:
        """Maps the region a sidecar offered, checking everything it claims."""
        directory = Path(directory or region_dir())
        if not _NAME.fullmatch(name or ""):
            raise RegionError(f"region name {name!r:.80} is not one a sidecar makes")
        if len(nonce) != NONCE_BYTES:
            raise RegionError(f"region nonce has {len(nonce)} bytes, expected {NONCE_BYTES}")
        if size < DATA_OFFSET:
            raise RegionError(f"region size {size} is below its {DATA_OFFSET}-byte control page")
        path = directory / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise RegionError(f"{path} does not exist here (a sidecar on another host, or "
                              f"in a container with its own {directory})") from None
        except OSError as error:
            raise RegionError(f"cannot open {path}: {error.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RegionError(f"{path} is not a regular file")
            if st.st_uid != os.geteuid():
                raise RegionError(f"{path} belongs to uid {st.st_uid}, not to this node's "
                                  f"user ({os.geteuid()})")
            if st.st_mode & 0o077:
                raise RegionError(f"{path} has mode {stat.S_IMODE(st.st_mode):o}: other users "
                                  "could read or change the weights (expected 600)")
            if st.st_size != size:
                raise RegionError(f"{path} has {st.st_size} bytes, the sidecar offered {size}")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as error:
            raise RegionError(f"cannot map {path}: {error.strerror}") from None
        finally:
            os.close(fd)
        if mm[:len(MAGIC)] != MAGIC or not secrets.compare_digest(mm[len(MAGIC):_UP], nonce):
            mm.close()
            raise RegionError(f"{path} is not the region the sidecar made (its control page "
                              "does not hold the offered nonce)")
        return cls(name, path, mm, nonce)

    def unlink(self) -> None:
        """Removes the name; the memory lives on while either side maps it."""
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:
            pass  # a view is still in use: the mapping goes when the last one does

    # ---- the data and the control words --------------------------------------------

    def check_span(self, offset: int, length: int, who: str) -> None:
        """RegionError unless [offset, offset+length) is aligned data inside the region."""
        if offset < DATA_OFFSET or offset % ALIGN:
            raise RegionError(f"{who}: offset {offset} is not a {ALIGN}-byte aligned offset "
                              f"at or past the control page ({DATA_OFFSET})")
        if length < 0 or offset + length > self.size:
            raise RegionError(f"{who}: bytes {offset}..{offset + length} are outside the "
                              f"{self.size}-byte region")

    def array(self, offset: int, length: int, dtype: np.dtype, who: str,
              writeable: bool = True) -> np.ndarray:
        """A zero-copy 1-D view of `length` bytes at `offset`, as `dtype`."""
        self.check_span(offset, length, who)
        dtype = np.dtype(dtype)
        if length % dtype.itemsize:
            raise RegionError(f"{who}: {length} bytes are not a whole number of "
                              f"{dtype.name} values")
        view = np.frombuffer(self._mm, dtype=dtype, count=length // dtype.itemsize,
                             offset=offset)
        if not writeable:
            view.flags.writeable = False
        return view

    @property
    def up_seq(self) -> int:
        return struct.unpack_from("<Q", self._mm, _UP)[0]

    @up_seq.setter
    def up_seq(self, value: int) -> None:
        struct.pack_into("<Q", self._mm, _UP, value)

    @property
    def down_seq(self) -> int:
        return struct.unpack_from("<Q", self._mm, _DOWN)[0]

    @down_seq.setter
    def down_seq(self, value: int) -> None:
        struct.pack_into("<Q", self._mm, _DOWN, value)
