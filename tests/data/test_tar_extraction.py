"""Archive extraction refuses what tarfile's "data" filter refuses, also on Pythons
without extraction filters (before 3.11.4, e.g. Debian 12's 3.11.2): the fallback."""

from __future__ import annotations

import io
import tarfile

import pytest

from swarm.data.sources import HAS_TAR_FILTERS, extract_all


def archive(tmp_path, *members: tarfile.TarInfo):
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = b"x" * member.size if member.isfile() else None
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return tarfile.open(path, "r:gz")


def file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = 3, mode
    return info


def link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize("filters", [False] + ([True] if HAS_TAR_FILTERS else []),
                         ids=lambda f: "filters" if f else "fallback")
def test_files_and_folders_are_extracted(tmp_path, filters):
    folder = tarfile.TarInfo("data")
    folder.type = tarfile.DIRTYPE
    with archive(tmp_path, folder, file("data/batch", 0o4755)) as tar:
        extract_all(tar, tmp_path / "out", filters=filters)
    extracted = tmp_path / "out" / "data" / "batch"
    assert extracted.read_bytes() == b"xxx"
    assert not extracted.stat().st_mode & 0o4000  # no set-uid bit


@pytest.mark.parametrize("filters", [False] + ([True] if HAS_TAR_FILTERS else []),
                         ids=lambda f: "filters" if f else "fallback")
@pytest.mark.parametrize("member", [file("../evil"), link("data/escape", "/etc/passwd")],
                         ids=["dotdot", "symlink-out"])
def test_members_that_would_escape_are_refused(tmp_path, filters, member):
    with archive(tmp_path, member) as tar, pytest.raises(tarfile.TarError):
        extract_all(tar, tmp_path / "out", filters=filters)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "out" / "data" / "escape").exists()


@pytest.mark.parametrize("filters", [False] + ([True] if HAS_TAR_FILTERS else []),
                         ids=lambda f: "filters" if f else "fallback")
def test_an_absolute_name_never_lands_outside(tmp_path, filters):
    outside = tmp_path / "evil-abs"
    with archive(tmp_path, file(str(outside))) as tar:
        try:
            extract_all(tar, tmp_path / "out", filters=filters)
        except tarfile.TarError:
            pass  # the fallback refuses it; the "data" filter strips the leading slash
    assert not outside.exists()
