"""SIGTERM and Ctrl-C during a real `geomoe embed-region`: a message saying what was kept and
how to resume, exit 143 / 130, and a rerun of the same command that resumes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, seeded_checkpoint

SCENE = "LC08_L2SP_204023_20200927_20201006_02_T1"  # the bundled Liverpool crop: 96 chips


def _default_sigint() -> None:
    # a background job may inherit SIGINT ignored; a terminal's Ctrl-C reaches a foreground one
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                           (signal.SIGINT, 130, "interrupted")])
def test_signal_says_what_was_kept_and_rerun_resumes(sig, code, word, tmp_path):
    ckpt = seeded_checkpoint(tmp_path / "xxs.safetensors")
    item = json.loads((REPO / "catalogs" / "landsat-scenes" / SCENE / f"{SCENE}.json").read_text())
    aoi = tmp_path / "scene.geojson"
    aoi.write_text(json.dumps(item["geometry"]))
    out = tmp_path / "cube.zarr"
    cmd = [sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi", str(aoi), "--out",
           str(out), "--checkpoint", str(ckpt), "--tile-size", "2", "--batch-size", "2", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    done = 0
    while done < 12:  # progress lines come at most once a second: 3+ tiles are finished by now
        line = proc.stderr.readline()
        assert line, proc.stderr.read()
        m = re.match(r"\[embed-region\] ([\d,]+)/~?([\d,]+) chips", line)  # ~: an estimate
        if m:
            done, total = int(m[1].replace(",", "")), int(m[2].replace(",", ""))
    assert done < total, "the run finished before the signal: the test needs a slower run"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == (f"geomoe embed-region: {word}: every tile finished so far is kept in {out}; "
                    "rerun the same command to resume (finished tiles are skipped)")
    rerun = subprocess.run(cmd + ["--json", "--quiet"], capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    s = json.loads(rerun.stdout)
    assert s["tiles_already_done"] + s["tiles_written"] == s["tiles_total"] == 24
    assert s["tiles_already_done"] > 0  # the interrupted run's tiles were kept, not redone


def test_sigterm_during_pretrain_points_to_the_checkpoint_and_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "geomoe.cli", "pretrain", "--aoi", str(REPO / "catalogs" / "aois" /
           "liverpool.geojson"), "--out", str(out), "--size", "XXS", "--batch-size", "4",
           "--checkpoint-every", "1", "--threads", "1", "--precision", "fp32"]
    proc = subprocess.Popen(cmd + ["--steps", "500"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state = out / "state" / "latest.pt"
    deadline = time.monotonic() + 180
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state.is_file(), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        f"geomoe pretrain: terminated (SIGTERM): the last checkpoint ({state}, written every "
        "--checkpoint-every steps) is kept; rerun the same command with --resume to continue from it")
    rerun = subprocess.run(cmd + ["--resume", "--stop-at-step", "1"], capture_output=True, text=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    m = re.search(r"stop_at_step: step (\d+)/500", rerun.stdout)
    assert m and int(m[1]) > 1, rerun.stdout  # continued after the kept checkpoint
