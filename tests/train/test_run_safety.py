"""Nothing lost, nothing silent in `geomoe pretrain`: an existing run is never replaced without
--overwrite, a folder geomoe did not make never, bad settings are refused before anything is
written, no untrained weights reach the disk, and files follow the umask."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from geomoe.cli import main
from geomoe.train.loop import RunFolderError, TrainConfig, TrainConfigError, train

from .conftest import REPO

LIVERPOOL = str(REPO / "catalogs" / "aois" / "liverpool.geojson")
CLI = ["pretrain", "--aoi", LIVERPOOL, "--batch-size", "8", "--threads", "1",
       "--checkpoint-every", "1"]


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` by relative path (folders as 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_cli_existing_run_is_refused_byte_identical_and_overwrite_replaces_only_geomoe_files(
        tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*CLI, "--out", str(out), "--size", "XXS", "--steps", "2"]) == 0
    (out / "notes.txt").write_text("my notes about this run\n")  # the user's file beside the run
    before = tree_hashes(out)
    assert {"model.safetensors", "state/latest.pt", "run.json", "metrics.csv",
            "previews/step_0000002.png"} <= before.keys()
    capsys.readouterr()

    # a new run of another size into the same folder: refused, one line, every byte kept
    assert main([*CLI, "--out", str(out), "--size", "XS", "--steps", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err
    assert "--resume" in err and "new --out" in err and "--overwrite" in err
    assert tree_hashes(out) == before

    # --overwrite: a fresh run replaces geomoe's files, stale previews go, the user's file stays
    assert main([*CLI, "--out", str(out), "--size", "XXS", "--steps", "1", "--overwrite"]) == 0
    after = tree_hashes(out)
    assert after["notes.txt"] == before["notes.txt"]
    assert "previews/step_0000002.png" not in after and "previews/step_0000001.png" in after
    assert after["model.safetensors"] != before["model.safetensors"]
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "geomoe-pretrain-run" and run["step"] == 1 and run["status"] == "done"
    assert [ln.split(",")[0] for ln in (out / "metrics.csv").read_text().splitlines()] == ["step", "1"]


@pytest.mark.parametrize("content", ["plain", "foreign-run-json", "file"])
def test_cli_folder_geomoe_did_not_make_is_refused_even_with_overwrite(tmp_path, capsys, content):
    out = tmp_path / "mine"
    if content == "file":
        out.write_text("not a folder\n")
    else:
        out.mkdir()
        (out / "data.csv").write_text("a,b\n1,2\n")
        (out / "model.safetensors").write_bytes(b"my own model")
        if content == "foreign-run-json":
            (out / "run.json").write_text(json.dumps({"status": "done", "step": 3}))
    before = tree_hashes(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert main([*CLI, "--out", str(out), "--size", "XXS", "--steps", "1", *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and "new --out" in err
        assert tree_hashes(tmp_path) == before


def test_export_never_clobbers_a_foreign_file(tmp_path, capsys):
    foreign = tmp_path / "weights.safetensors"
    foreign.write_bytes(b"someone else's weights")
    before = tree_hashes(tmp_path)
    assert main([*CLI, "--out", str(tmp_path / "run"), "--size", "XXS", "--steps", "1",
                 "--overwrite", "--export", str(foreign)]) == 1
    assert "not a geomoe checkpoint" in capsys.readouterr().err
    assert tree_hashes(tmp_path) == before  # refused before training: no run folder either


def test_library_and_flow_path_refuse_existing_run(tmp_path, small_items, europe_aoi):
    cfg = TrainConfig(size="XXS", steps=1, batch_size=4, checkpoint_every=1)
    out = tmp_path / "r"
    train(small_items[:4], out, cfg, aoi=europe_aoi, log=None)
    before = tree_hashes(out)
    with pytest.raises(RunFolderError, match="--overwrite"):
        train(small_items[:4], out, cfg, aoi=europe_aoi, log=None)
    with pytest.raises(TrainConfigError, match="exclude each other"):
        train(small_items[:4], out, cfg, aoi=europe_aoi, resume=True, overwrite=True, log=None)
    assert tree_hashes(out) == before
    res = train(small_items[:4], out, cfg, aoi=europe_aoi, overwrite=True, log=None)
    assert res.stopped == "done" and res.step == 1
    # the Prefect flow's `resume: auto` resumes when the state exists: it neither fails nor
    # replaces (steps extended 1 -> 2 continues the same run)
    res = train(small_items[:4], out, TrainConfig(size="XXS", steps=2, batch_size=4,
                                                  checkpoint_every=1),
                aoi=europe_aoi, resume=True, log=None)
    assert res.step == 2


def test_run_stopped_before_its_first_step_writes_no_weights_and_restarts(
        tmp_path, small_items, europe_aoi):
    """A run killed during step 1 leaves no weights; starting again needs no --overwrite."""
    cfg = TrainConfig(size="XXS", steps=2, batch_size=4, checkpoint_every=1)
    out = tmp_path / "r"

    def boom(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_items[:4], out, cfg, aoi=europe_aoi, on_step=boom, log=None)
    assert not (out / "model.safetensors").exists() and not (out / "state").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    res = train(small_items[:4], out, cfg, aoi=europe_aoi, log=None)
    assert res.step == 2 and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("kw, option", [
    ({"max_seconds": 0}, "max_seconds"),
    ({"max_seconds": -5.0}, "max_seconds"),
    ({"stop_at_step": 0}, "stop_at_step"),
])
def test_no_checkpoint_before_the_first_optimizer_step(tmp_path, small_items, europe_aoi, kw,
                                                       option):
    """A stop that would come before step 1 is refused up front: no folder, no weights."""
    cfg = TrainConfig(size="XXS", steps=3, batch_size=4)
    with pytest.raises(TrainConfigError, match=option):
        train(small_items[:4], tmp_path / "r", cfg, aoi=europe_aoi, log=None, **kw)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_cli_steps_below_one_is_refused_and_writes_nothing(tmp_path, steps):
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "geomoe.cli", *CLI, "--out", str(out), "--size", "XXS",
         "--steps", steps], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--steps" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists()


@pytest.mark.parametrize("option, value", [
    ("--min-valid", "1.5"), ("--batch-size", "0"), ("--mask-ratio", "1.0"),
    ("--mask-ratio", "0.999"), ("--lr", "0"), ("--weight-decay", "-0.1"),
    ("--warmup-steps", "-1"), ("--checkpoint-every", "0"),
])
def test_cli_bad_numbers_are_one_line_errors_before_anything_is_written(tmp_path, option, value):
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "geomoe.cli", *CLI, "--out", str(out), "--size", "XXS",
         "--steps", "1", option, value], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert option in proc.stderr.strip().splitlines()[-1]
    assert not out.exists()


@pytest.mark.parametrize("field, value, valid", [
    ("steps", 0, "integer >= 1"), ("steps", -1, "integer >= 1"), ("steps", 2.5, "integer >= 1"),
    ("batch_size", 0, "integer >= 1"), ("min_valid", 1.5, r"in \[0, 1\]"),
    ("min_valid", -0.1, r"in \[0, 1\]"), ("mask_ratio", 1.0, r"in \(0, 1\)"),
    ("mask_ratio", 0.0, r"in \(0, 1\)"), ("mask_ratio", 0.999, "one visible and one masked"),
    ("mask_ratio", 0.001, "one visible and one masked"), ("lr", 0.0, "> 0"),
    ("lr", float("nan"), "> 0"), ("weight_decay", -0.01, ">= 0"),
    ("warmup_steps", -1, "integer >= 0"), ("checkpoint_every", 0, "integer >= 1"),
    ("size", "M", "one of S, XS, XXS"), ("precision", "fp16", "auto, fp32 or bf16"),
])
def test_train_config_ranges(field, value, valid):
    opt = "--" + field.replace("_", "-")
    with pytest.raises(TrainConfigError, match=rf"{field} \({opt}\) must be .*{valid}"):
        TrainConfig(**{field: value})


def test_train_revalidates_a_config_changed_after_construction(tmp_path, small_items, europe_aoi):
    cfg = TrainConfig(size="XXS", steps=2, batch_size=4)
    cfg.steps = 0  # the flow / API may build a config and change it before calling train()
    with pytest.raises(TrainConfigError, match=r"steps \(--steps\)"):
        train(small_items[:4], tmp_path / "r", cfg, aoi=europe_aoi, log=None)
    assert not (tmp_path / "r").exists()


def test_flow_config_refuses_steps_below_one():
    import geomoe.flows.pretrain as mod

    with pytest.raises(TrainConfigError, match="steps"):
        mod._config(size="XXS", steps=0, batch_size=8)


def test_run_files_follow_the_umask(tmp_path, small_items, europe_aoi):
    from geomoe.model import build_model, save_checkpoint

    old = os.umask(0o002)
    try:
        res = train(small_items[:4], tmp_path / "r", TrainConfig(size="XXS", steps=1, batch_size=4),
                    aoi=europe_aoi, log=None)
        os.umask(0o027)
        other = save_checkpoint(build_model("XXS"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
             for p in (tmp_path / "r").rglob("*")}
    for f in ("r/model.safetensors", "r/state/latest.pt", "r/run.json", "r/metrics.csv",
              "r/previews/latest.png"):
        assert modes[f] == 0o664, (f, oct(modes[f]))
    assert modes["r/state"] == modes["r/previews"] == 0o775
    assert stat.S_IMODE(res.out.stat().st_mode) == 0o775
    assert stat.S_IMODE(other.stat().st_mode) == 0o640
