"""Atomic training-state writes: a process killed in the middle of a save never corrupts latest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from geomoe.errors import CheckpointError
from geomoe.train.state import load_state, save_state

WRITER = textwrap.dedent(
    """
    import sys, torch
    from geomoe.train.state import save_state
    path = sys.argv[1]
    save_state(path, {"version": 1, "blob": torch.arange(1000, dtype=torch.float32)})
    print("saved", flush=True)
    big = torch.full((48_000_000,), 7.0)   # ~190 MB: the save takes a while
    v = 2
    while True:                              # keep saving until killed
        save_state(path, {"version": v, "blob": big})
        v += 1
    """
)


def test_kill_during_save_leaves_previous_state_intact(tmp_path):
    latest = tmp_path / "state" / "latest.pt"
    for attempt in range(5):
        latest.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(latest)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "saved"
            deadline = time.monotonic() + 60
            tmp = []
            while time.monotonic() < deadline:  # wait until a partial temp file is being written
                tmp = [p for p in latest.parent.glob(".latest.pt.tmp-*") if p.stat().st_size > 0]
                if tmp:
                    break
                time.sleep(0.001)
            assert tmp, "the writer never started its second save"
            os.kill(proc.pid, signal.SIGKILL)  # for real: no cleanup handlers run
        finally:
            proc.kill()
            proc.wait()
        leftover = list(latest.parent.glob(".latest.pt.tmp-*"))
        if leftover:  # killed before the rename: the interesting case
            break
    else:
        pytest.fail("could not kill the writer mid-save in 5 attempts")
    size_partial = leftover[0].stat().st_size
    state = load_state(latest)  # the previous complete state, loadable with weights_only=True
    assert state["version"] == 1
    assert torch.equal(state["blob"], torch.arange(1000, dtype=torch.float32))
    assert size_partial > 0
    # the torn temp file itself is unreadable: this is what a non-atomic writer would have left
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_state(leftover[0])


def test_corrupt_or_foreign_state_is_a_clear_error(tmp_path):
    p = tmp_path / "latest.pt"
    save_state(p, {"step": 1, "w": torch.ones(10_000)})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state(p)
    torch.save({"not": "ours"}, p)
    with pytest.raises(CheckpointError, match="not a geomoe training state"):
        load_state(p)
    with pytest.raises(CheckpointError, match="no training state"):
        load_state(tmp_path / "missing.pt")


def test_pickled_code_in_state_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "latest.pt"
    torch.save({"format": 1, "x": Evil()}, p)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_state(p)
    assert not marker.exists()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    from geomoe.atomic import remove_stale_tmp

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f".latest.pt.tmp-{proc.stdout.strip()}"
    dead.write_bytes(b"torn")
    mine = tmp_path / f".latest.pt.tmp-{os.getpid()}"
    mine.write_bytes(b"in progress")
    assert remove_stale_tmp(tmp_path) == [dead]
    assert mine.exists() and not dead.exists()
