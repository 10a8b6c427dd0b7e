"""geomoe.atomic.atomic_write: the one way geomoe replaces a whole file."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from geomoe.atomic import atomic_write

PACKAGE = Path(__file__).resolve().parents[1] / "geomoe"


def test_writer_that_creates_0600_gets_the_umask_mode(tmp_path):
    """safetensors-style writers create 0600; the final file has open()'s mode, like any other."""
    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"new")
        os.close(fd)

    old = os.umask(0o027)
    try:
        out = atomic_write(tmp_path / "sub" / "f.bin", write)
    finally:
        os.umask(old)
    assert out.read_bytes() == b"new"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert list(out.parent.iterdir()) == [out]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(target, write)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    atomic_write(target, "new text")
    assert target.read_text() == "new text"


def test_no_other_module_renames_temp_files_itself():
    """One atomic-write helper: every tmp + os.replace in the package is geomoe.atomic's."""
    rename = re.compile(r"\bos\.replace\(|\btmp\.replace\(|\.rename\(")
    offenders = [
        f"{p.relative_to(PACKAGE.parent)}:{n}"
        for p in sorted(PACKAGE.rglob("*.py")) if p.name != "atomic.py"
        for n, line in enumerate(p.read_text().splitlines(), 1) if rename.search(line)
    ]
    assert offenders == []
