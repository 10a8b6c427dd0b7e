"""Fixtures of the probe tests: the bundled labelled sample, embedded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ben_data():
    """The bundled BigEarthNet-Landsat sample chipped once (195 usable labelled patches)."""
    from geomoe.evaluate.probe import load_bigearthnet

    return load_bigearthnet()


@pytest.fixture(scope="session")
def xxs_checkpoint(tmp_path_factory):
    """A real geomoe checkpoint of size XXS (random weights, seed 1)."""
    import torch

    from geomoe.model import build_model, save_checkpoint

    torch.manual_seed(1)
    return save_checkpoint(build_model("XXS"), tmp_path_factory.mktemp("ckpt") / "xxs.safetensors")


def single_label_patches(per_class: int) -> list[tuple[str, list]]:
    """Up to ``per_class`` bundled patches for each of 3 classes (water, conifer, arable) that
    carry none of the other two labels, as (class name, [pystac.Item]); the all-fill patch is left
    out. For EuroSAT-layout folder datasets (geomoe.evaluate.probe.write_folder_dataset)."""
    from geomoe.evaluate.probe import load_labelled_items

    labelled, _ = load_labelled_items()
    pick = {"water": "Marine waters", "conifer": "Coniferous forest", "arable": "Arable land"}
    chosen, used = [], set()
    for name, cls in pick.items():
        others = set(pick.values()) - {cls}
        got = [it for it, lab in labelled if cls in lab and not others & set(lab)
               and it.id not in used and it.id != "S2A_MSIL2A_20170613T101032_67_54"][:per_class]
        used.update(it.id for it in got)
        chosen.append((name, got))
    return chosen


# ----------------------------------------------------------------- cube analyses (probe, change)
ANALYSIS_DATA = REPO / "tests" / "data" / "analysis"


def fixture_script():
    """scripts/make_analysis_fixtures.py as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_analysis_fixtures",
                                                  REPO / "scripts" / "make_analysis_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def ben_table_cube(tmp_path_factory, xxs_checkpoint):
    """An embed-region cube (chips table) over the whole bundled BigEarthNet collection."""
    import json

    from geomoe.embed.pipeline import embed_region

    europe = {"type": "Polygon", "coordinates": [[[-10, 36], [32, 36], [32, 68], [-10, 68], [-10, 36]]]}
    out = tmp_path_factory.mktemp("bencube") / "ben.zarr"
    embed_region(json.dumps(europe), catalog=str(REPO / "catalogs" / "bigearthnet-landsat-sample"
                                                 / "collection.json"),
                 checkpoint=xxs_checkpoint, out=out, batch_size=64, table_tile=64)
    return out


@pytest.fixture(scope="session")
def change_pair_cube(tmp_path_factory, xxs_checkpoint):
    """A two-date grid cube of the whole Liverpool scene: 2020-09-27 as it is, 2021-09-27 with
    one 3 x 2 chip block replaced by real Greenland pixels. (cube, block bounds EPSG:32630)."""
    import json

    from geomoe.embed.pipeline import embed_region

    mod = fixture_script()
    root = tmp_path_factory.mktemp("changepair")
    coll, block = mod.change_pair(root / "cat")
    item = json.loads((REPO / "catalogs" / "landsat-scenes" / mod.LIVERPOOL
                       / f"{mod.LIVERPOOL}.json").read_text())
    out = root / "two.zarr"
    embed_region(json.dumps(item["geometry"]), catalog=str(coll), checkpoint=xxs_checkpoint,
                 out=out, batch_size=64, tile_size=4)
    return out, block
