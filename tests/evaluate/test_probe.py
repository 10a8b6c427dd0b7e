"""Linear probes on the real bundled BigEarthNet-Landsat sample and a class-folder fixture."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from geomoe.cli import main
from geomoe.evaluate.labels import BEN19_CLASSES
from geomoe.evaluate.probe_common import iterative_stratified_folds
from geomoe.evaluate.probe import (
    CheckpointSizeError,
    LabelsMissingError,
    cv_multilabel,
    embed_data,
    load_bigearthnet,
    load_folder_dataset,
    load_labelled_items,
    load_probe_model,
    write_folder_dataset,
)

from .conftest import single_label_patches

REQUIRED = ("micro_map_mean", "micro_map_std", "macro_map_mean", "macro_map_std", "n_samples",
            "n_folds", "checkpoint_sha256", "pooling")


def test_labels_come_from_items_and_the_unlabelled_patch_is_counted(ben_data):
    c = ben_data.counts
    assert c["items"] == 200 and c["unlabelled_excluded"] == 1
    # the all-fill and 99 %-fill patches (and two partly filled ones) are under min_valid
    assert c["invalid_excluded"] == 4 and c["samples"] == 195 == len(ben_data.chips.item_id)
    assert "S2A_MSIL2A_20171208T093351_82_79" not in ben_data.chips.item_id  # the unlabelled one
    assert ben_data.chips.pixels.shape == (195, 7, 40, 40) and ben_data.chips.pixels.dtype == np.uint16
    assert ben_data.y.shape == (195, 19) and ben_data.y.sum(1).min() >= 1
    assert ben_data.classes == list(BEN19_CLASSES)
    labelled, _ = load_labelled_items()
    by_id = {it.id: lab for it, lab in labelled}
    for i in (0, 77, 194):  # multi-hot rows follow the items' bigearthnet:labels_19
        assert [BEN19_CLASSES[k] for k in np.flatnonzero(ben_data.y[i])] == by_id[ben_data.chips.item_id[i]]
    assert ben_data.chips.week.shape == (195, 2) and np.isfinite(ben_data.chips.lat).all()


def test_iterative_stratification_spreads_every_label():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 6)) < [0.5, 0.3, 0.1, 0.05, 0.04, 0.02]).astype(int)
    folds = iterative_stratified_folds(y, 4, np.random.default_rng(1))
    assert set(folds) == {0, 1, 2, 3}
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 2
    for k in range(y.shape[1]):
        per_fold = np.bincount(folds[y[:, k] == 1], minlength=4)
        assert per_fold.max() - per_fold.min() <= 1, (k, per_fold)  # rare labels in every fold


def test_cli_probe_report_json_csv_png(tmp_path, xxs_checkpoint):
    report = tmp_path / "report.json"
    rc = main(["probe", "--checkpoint", str(xxs_checkpoint), "--pooling", "mean",
               "--folds", "3", "--repeats", "1", "--report", str(report)])
    assert rc == 0
    rep = json.loads(report.read_text())
    for k in REQUIRED:
        assert k in rep, k
    assert rep["n_samples"] == 195 and rep["n_folds"] == 3 and rep["pooling"] == "mean"
    assert len(rep["checkpoint_sha256"]) == 64
    # a linear probe on real features is far above the label-prevalence chance level (~0.14)
    prevalence = sum(rep["class_counts"].values()) / (195 * 19)
    assert rep["micro_map_mean"] > prevalence + 0.2
    assert 0 < rep["micro_map_std"] < 0.2 and len(rep["micro_map_folds"]) == 3
    assert "too small to compare" in rep["summary"] and "73.1/55.7" in rep["summary"]
    assert rep["paper_reference"]["eurosat_landsat_accuracy"] == 74.3
    base = rep["comparison"]["micro_map"]  # random-init baseline on the same folds
    assert base["folds"] == 3 and "beats_random_by_more_than_spread" in base
    assert 0 < rep["baseline_band_stats"]["micro_map_mean"] < 1  # no-model reference
    assert rep["counts"]["unlabelled_excluded"] == 1
    rows = list(csv.reader(open(report.with_suffix(".csv"))))
    assert rows[0][0] == "class" and len(rows) == 1 + 19 + 2
    png = report.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize("pooling", ["cls", "patch_mean"])
def test_poolings_give_different_embeddings(ben_data, pooling):
    model, _ = load_probe_model(None, random_init=True, size="XXS", seed=0)
    sub = dataclasses.replace(ben_data, chips=ben_data.chips.take(slice(0, 16)), y=ben_data.y[:16])
    a = embed_data(model, sub, "mean")
    b = embed_data(model, sub, pooling)
    assert a.shape == b.shape == (16, 108) and not np.allclose(a, b)
    assert np.array_equal(b, embed_data(model, sub, pooling))  # frozen and deterministic


def test_folder_dataset_multiclass_accuracy(tmp_path, xxs_checkpoint):
    chosen = [(it, name) for name, got in single_label_patches(8) for it in got]
    root = write_folder_dataset(chosen, tmp_path / "eurosat-like")
    assert sorted(p.name for p in root.iterdir()) == ["arable", "conifer", "water"]
    data = load_folder_dataset(root)
    assert data.chips.pixels.shape == (24, 7, 40, 40) and not data.multilabel and data.chips.week is None
    report = tmp_path / "folder.json"
    rc = main(["probe", "--checkpoint", str(xxs_checkpoint), "--dataset-dir", str(root),
               "--folds", "4", "--repeats", "2", "--report", str(report)])
    assert rc == 0
    rep = json.loads(report.read_text())
    assert rep["task"] == "folder-multiclass" and rep["n_samples"] == 24
    assert rep["accuracy_mean"] > 0.6  # well above chance (1/3) on these distinct covers
    assert len(rep["accuracy_folds"]) == 8 and "comparison" in rep
    assert report.with_suffix(".png").is_file() and report.with_suffix(".csv").is_file()


def test_missing_labels_is_a_specific_error(tmp_path, repo_root, capsys):
    scenes = repo_root / "catalogs" / "landsat-scenes" / "collection.json"
    with pytest.raises(LabelsMissingError, match="none of the .* items .* has labels"):
        load_bigearthnet(scenes)
    rc = main(["probe", "--random-init", "--catalog", str(scenes), "--report",
               str(tmp_path / "r.json")])
    assert rc == 1 and "has labels" in capsys.readouterr().err
    one = tmp_path / "one-class" / "water"
    one.mkdir(parents=True)
    (one / "a.tif").write_bytes(b"")
    with pytest.raises(LabelsMissingError, match="at least 2"):
        load_folder_dataset(tmp_path / "one-class")


def test_checkpoint_of_another_size_is_refused(xxs_checkpoint, tmp_path, capsys):
    with pytest.raises(CheckpointSizeError, match="size-XXS model, not S"):
        load_probe_model(xxs_checkpoint, size="S")
    rc = main(["probe", "--checkpoint", str(xxs_checkpoint), "--size", "S", "--report",
               str(tmp_path / "r.json")])
    assert rc == 1 and "size-XXS" in capsys.readouterr().err
    rc = main(["probe", "--checkpoint", str(tmp_path / "nope.safetensors"), "--report",
               str(tmp_path / "r.json")])
    assert rc == 1 and "not found" in capsys.readouterr().err


def test_probe_embed_and_retrain_share_one_default_checkpoint_rule(tmp_path, monkeypatch):
    """No --checkpoint: the demo checkpoint in the working directory wins over the checkout's,
    for probe exactly as for embed-region (one rule, geomoe.model.checkpoint)."""
    from pathlib import Path

    from geomoe.embed.pipeline import resolve_checkpoint
    from geomoe.model.checkpoint import DEMO_CHECKPOINT, default_checkpoint

    from ..conftest import seeded_checkpoint

    (tmp_path / DEMO_CHECKPOINT).parent.mkdir(parents=True)
    demo = seeded_checkpoint(tmp_path / DEMO_CHECKPOINT).resolve()
    monkeypatch.chdir(tmp_path)
    _, info = load_probe_model(None)
    assert Path(info["checkpoint"]).resolve() == demo and info["size"] == "XXS"
    assert resolve_checkpoint(None).resolve() == demo == default_checkpoint().resolve()


def test_cv_multilabel_rejects_too_few_samples():
    with pytest.raises(LabelsMissingError, match="too few"):
        cv_multilabel(np.zeros((6, 4)), np.ones((6, 3), dtype=int), n_folds=5)


def test_probe_embeds_with_the_checkpoint_statistics(ben_data, tmp_path):
    """The probe z-scores with the statistics the checkpoint carries, not the published ones."""
    import torch

    from geomoe.chips.bands import PUBLISHED, Normalisation, zscore
    from geomoe.model import build_model, save_checkpoint

    other = Normalisation(tuple(m * 0.5 + 1000.3 for m in PUBLISHED.mean), tuple(s * 1.7 for s in PUBLISHED.std))
    torch.manual_seed(0)
    path = save_checkpoint(build_model("XXS", norm_mean=other.mean, norm_std=other.std), tmp_path / "o.safetensors")
    model, _ = load_probe_model(path)
    sub = dataclasses.replace(ben_data, chips=ben_data.chips.take(slice(0, 8)), y=ben_data.y[:8])
    got = embed_data(model, sub, "mean")
    c = sub.chips
    meta = {k: torch.from_numpy(getattr(c, k)) for k in ("week", "hour", "lat", "lon")}
    with torch.no_grad():
        want = model.embed(torch.from_numpy(zscore(c.pixels, np.float32(other.mean), np.float32(other.std))),
                           **meta).numpy()
        pub = model.embed(torch.from_numpy(PUBLISHED(c.pixels)), **meta).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, pub, rtol=1e-3, atol=1e-4)
