"""embed-region z-scores with the checkpoint's own statistics and records exactly those.

The checkpoint here carries statistics other than the published ones, so z-scoring with the
module constants (what embed-region did before) gives other vectors and is caught.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from geomoe.chips.bands import PUBLISHED, Normalisation, zscore
from geomoe.cube.store import CubeMismatchError, open_group
from geomoe.cube.store import ensure_writable
from geomoe.embed.pipeline import EmbedRequest, embed_region, embed_tile, prepare, search_and_plan
from geomoe.embed.lock import store_lock

from .test_data_safety import tree_hash

OTHER = Normalisation(tuple(m * 0.5 + 1000.3 for m in PUBLISHED.mean), tuple(s * 1.7 for s in PUBLISHED.std))
KW = {"batch_size": 8, "tile_size": 2}


@pytest.fixture(scope="module")
def ckpt_other_stats(tmp_path_factory):
    """A real checkpoint (XXS, seed 0) whose config carries statistics of its own."""
    from geomoe.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("XXS", norm_mean=OTHER.mean, norm_std=OTHER.std)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt-other") / "xxs-other-stats.safetensors")


@pytest.fixture(scope="module")
def other_cube(tmp_path_factory, liverpool_aoi, ckpt_other_stats):
    out = tmp_path_factory.mktemp("other") / "liverpool.zarr"
    embed_region(str(liverpool_aoi), checkpoint=ckpt_other_stats, out=out, **KW)
    return out


def _expected(ckpt, aoi_path):
    """(x, y) -> (embedding with OTHER, embedding with PUBLISHED), z-scored here, not by geomoe."""
    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.chips.plan import iter_chips
    from geomoe.model import load_checkpoint

    model = load_checkpoint(ckpt)
    aoi = load_aoi(str(aoi_path))
    mean, std = np.float32(OTHER.mean), np.float32(OTHER.std)
    out = {}
    for b in iter_chips(search(None, aoi), aoi=aoi, batch_size=64):
        meta = {k: torch.from_numpy(getattr(b, k)) for k in ("week", "hour", "lat", "lon")}
        with torch.inference_mode():
            e = model.embed(torch.from_numpy(zscore(b.pixels, mean, std)), **meta).numpy()
            p = model.embed(torch.from_numpy(zscore(b.pixels, PUBLISHED.mean, PUBLISHED.std)), **meta).numpy()
        for k in range(len(b)):
            out[(float(b.x[k]), float(b.y[k]))] = (e[k], p[k])
    return out


def _check(cube, expected):
    ds = open_group(cube, "utm30n")
    for (x, y), (e, p) in expected.items():
        got = ds.embedding.sel(x=x, y=y).isel(time=0).values
        np.testing.assert_allclose(got, e, rtol=1e-4, atol=1e-5)
        assert not np.allclose(got, p, rtol=1e-3, atol=1e-4)  # the published stats give others


def test_embed_region_and_embed_tile_use_the_checkpoint_statistics(
        other_cube, ckpt_other_stats, liverpool_aoi, tmp_path):
    expected = _expected(ckpt_other_stats, liverpool_aoi)
    assert len(expected) == 20
    _check(other_cube, expected)
    attrs = zarr.open_group(str(other_cube), mode="r").attrs.asdict()
    assert attrs["geomoe:identity"]["normalisation"] == OTHER.to_dict()
    norm = attrs["geomoe:normalisation"]
    assert {"mean": norm["mean"], "std": norm["std"]} == OTHER.to_dict()
    stac = other_cube.with_name(other_cube.name + ".stac")
    item = json.loads((stac / "utm30n.json").read_text())
    stac_norm = item["properties"]["emb:runtime_parameters"]["normalisation"]
    assert {"mean": stac_norm["mean"], "std": stac_norm["std"]} == OTHER.to_dict()
    scaling = json.loads((stac / "model.json").read_text())["properties"]["mlm:input"][0]["value_scaling"]
    assert [[v["mean"] for v in scaling], [v["stddev"] for v in scaling]] == [list(OTHER.mean), list(OTHER.std)]
    # the per-tile path of the Prefect / Dask flows: the same statistics
    req = EmbedRequest(aoi=str(liverpool_aoi), out=str(tmp_path / "tiles.zarr"),
                       checkpoint=str(ckpt_other_stats), **KW)
    planned = search_and_plan(req)
    ensure_writable(Path(req.out))
    with store_lock(req.out):
        prep = prepare(req, planned)
        run = prep.cube.new_run()
        for tile in prep.cube.pending_tiles():
            embed_tile(prep, tile, run, device="cpu")
    _check(tmp_path / "tiles.zarr", expected)


def test_resume_of_a_cube_made_with_other_statistics_is_refused(other_cube, ckpt_other_stats,
                                                               liverpool_aoi, tmp_path):
    """A cube that records other statistics than the checkpoint's (what geomoe recorded for this
    checkpoint before the statistics came from the weights) is not resumed: its vectors and
    the new ones would be z-scored differently."""
    out = tmp_path / "old.zarr"
    shutil.copytree(other_cube, out)
    doc = json.loads((out / "zarr.json").read_text())
    doc["attributes"]["geomoe:identity"]["normalisation"] = PUBLISHED.to_dict()
    (out / "zarr.json").write_text(json.dumps(doc))
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError, match=r"normalisation=.*you asked"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_other_stats, out=out, **KW)
    assert tree_hash(out) == before
    # the cube as made resumes (nothing to do)
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_other_stats, out=other_cube, **KW)
    assert s.tiles_written == 0 and s.tiles_already_done == 6
