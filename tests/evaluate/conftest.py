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
