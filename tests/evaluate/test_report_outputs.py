"""Probe reports and plots never replace a file silently; a probe that has to use fewer folds
than asked says so (warning, report field, CLI summary)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from geomoe.cli import main
from geomoe.evaluate.probe import ProbeFoldsWarning, run_probe, write_folder_dataset
from geomoe.evaluate.probe_common import ReportExistsError, check_report_paths

from .conftest import REPO, single_label_patches


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder_sets(tmp_path_factory):
    """Two EuroSAT-layout sets from the bundled sample: 3 classes x 6 images, and the same with
    one class cut to 2 images (too few for 5 folds)."""
    chosen = single_label_patches(6)
    root = tmp_path_factory.mktemp("sets")
    even = write_folder_dataset([(it, n) for n, got in chosen for it in got], root / "even")
    small = write_folder_dataset([(it, n) for n, got in chosen
                                  for it in (got[:2] if n == "water" else got)], root / "small")
    return even, small


def _probe_cli(ckpt, data, report, *extra):
    return main(["probe", "--checkpoint", str(ckpt), "--dataset-dir", str(data), "--folds", "2",
                 "--repeats", "1", "--no-baseline", "--report", str(report), *extra])


def test_cli_probe_report_is_replaced_only_with_overwrite(tmp_path, xxs_checkpoint, folder_sets,
                                                          capsys):
    even, _ = folder_sets
    out = tmp_path / "reports"
    report = out / "r.json"
    assert _probe_cli(xxs_checkpoint, even, report) == 0
    assert json.loads(report.read_text())["kind"] == "geomoe-probe-report"
    before = tree_hashes(out)
    assert set(before) == {"r.json", "r.csv", "r.png"}
    capsys.readouterr()
    assert _probe_cli(xxs_checkpoint, even, report, "--seed", "3") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(report) in err and "--overwrite" in err
    assert tree_hashes(out) == before
    assert _probe_cli(xxs_checkpoint, even, report, "--seed", "3", "--overwrite") == 0
    assert json.loads(report.read_text())["seed"] == 3


@pytest.mark.parametrize("foreign", ["r.json", "r.png", "r.csv"])
def test_files_geomoe_did_not_write_are_never_replaced(tmp_path, xxs_checkpoint, folder_sets,
                                                       capsys, foreign):
    even, _ = folder_sets
    (tmp_path / foreign).write_text('{"my": "results"}\n')
    before = tree_hashes(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert _probe_cli(xxs_checkpoint, even, tmp_path / "r.json", *extra) == 1
        err = capsys.readouterr().err
        assert "never replaced" in err and foreign in err
        assert tree_hashes(tmp_path) == before


def test_report_must_be_a_json_path(tmp_path):
    with pytest.raises(ReportExistsError, match="must end in .json"):
        check_report_paths(tmp_path / "r.csv")  # the csv would be written over the json


def test_too_few_samples_warns_once_and_records_the_folds_used(tmp_path, xxs_checkpoint,
                                                              folder_sets):
    _, small = folder_sets
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        rep = run_probe(checkpoint=xxs_checkpoint, dataset_dir=small, n_folds=5, n_repeats=1,
                        baseline=True)
    folds_warnings = [w for w in got if issubclass(w.category, ProbeFoldsWarning)]
    assert len(folds_warnings) == 1  # not once per baseline
    msg = str(folds_warnings[0].message)
    assert "'water' has only 2 samples" in msg and "2 folds instead of the 5 asked" in msg
    assert rep["n_folds"] == 2 and rep["n_folds_requested"] == 5
    assert len(rep["accuracy_folds"]) == 2
    assert "1x2-fold" in rep["summary"] and "folds: 2 used, 5 asked" in rep["summary"]


def test_cli_shows_the_folds_warning_and_the_folds_used(tmp_path, xxs_checkpoint, folder_sets):
    _, small = folder_sets
    res = subprocess.run(
        [sys.executable, "-m", "geomoe.cli", "probe", "--checkpoint", str(xxs_checkpoint),
         "--dataset-dir", str(small), "--repeats", "1", "--no-baseline",
         "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300,
        cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "only 2 samples" in res.stderr  # the warning, however the CLI formats it
    assert "folds: 2 used, 5 asked" in res.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_folds"] == 2 and rep["n_folds_requested"] == 5


def test_enough_samples_use_the_folds_asked_without_a_warning(xxs_checkpoint, folder_sets):
    even, _ = folder_sets
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeFoldsWarning)
        rep = run_probe(checkpoint=xxs_checkpoint, dataset_dir=even, n_folds=3, n_repeats=1,
                        baseline=False)
    assert rep["n_folds"] == rep["n_folds_requested"] == 3
    assert "asked" not in rep["summary"]


# ------------------------------------------------------------------------------------ plot
@pytest.fixture(scope="module")
def two_cubes(tmp_path_factory):
    """A real Liverpool cube (XXS, seeded weights) and a copy of it under another name."""
    from geomoe.embed.pipeline import embed_region
    from tests.conftest import seeded_checkpoint

    root = tmp_path_factory.mktemp("cubes")
    ckpt = seeded_checkpoint(root / "xxs.safetensors")
    a = root / "a.zarr"
    embed_region(str(REPO / "catalogs" / "aois" / "liverpool.geojson"), checkpoint=ckpt, out=a,
                 batch_size=16, tile_size=4)
    b = root / "b.zarr"
    shutil.copytree(a, b)
    return a, b


def test_plot_never_replaces_a_file_geomoe_did_not_write(tmp_path, two_cubes, capsys):
    a, _ = two_cubes
    png = tmp_path / "figure.png"
    shutil.copyfile(REPO / "geomoe" / "__init__.py", png)  # any file of the user's
    before = tree_hashes(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert main(["plot", str(a), "--out", str(png), *extra]) == 1
        err = capsys.readouterr().err
        assert "not a geomoe plot" in err and str(png) in err
        assert tree_hashes(tmp_path) == before


def test_plot_redraws_its_own_cube_and_needs_overwrite_for_another(tmp_path, two_cubes, capsys):
    from geomoe.viz import plotted_cube

    a, b = two_cubes
    png = tmp_path / "p.png"
    assert main(["plot", str(a), "--out", str(png)]) == 0
    assert plotted_cube(png) == str(a.resolve())
    assert main(["plot", str(a), "--out", str(png), "--dpi", "60"]) == 0  # same cube: redrawn
    before = png.read_bytes()
    capsys.readouterr()
    assert main(["plot", str(b), "--out", str(png)]) == 1
    assert "another cube" in capsys.readouterr().err and png.read_bytes() == before
    assert main(["plot", str(b), "--out", str(png), "--overwrite"]) == 0
    assert plotted_cube(png) == str(b.resolve())
