"""patch_url (as odc-stac's): a callable applied to every asset href when its file is opened;
Planetary Computer's signer is one such callable, from the optional extra geomoe[pc]."""

from __future__ import annotations

import copy
import importlib.util
import types

import numpy as np
import pystac
import pytest

from geomoe.chips.plan import iter_chips, plan_chips
from geomoe.chips.assets import SignerMissingError, default_patch_url, is_planetary_computer

from .conftest import LIVERPOOL

MOVED = "/moved-away/"


def _moved(item: pystac.Item) -> tuple[pystac.Item, dict[str, str]]:
    """A copy of `item` whose hrefs point nowhere, and the map back to the real files."""
    it = copy.deepcopy(item)
    back = {}
    for a in it.assets.values():
        fake = MOVED + a.href.lstrip("/")
        back[fake] = a.href
        a.href = fake
    return it, back


def test_patch_url_rewrites_each_href_when_its_file_is_opened(bundled_items, aois):
    item = bundled_items[LIVERPOOL]
    moved, back = _moved(item)
    seen: list[str] = []

    def patch(href: str) -> str:
        seen.append(href)
        return back[href]

    plan = plan_chips([moved], aoi=aois("liverpool"), patch_url=patch)
    stream = iter_chips([moved], aoi=aois("liverpool"), batch_size=64, plan=plan, patch_url=patch)
    assert seen == []  # planning and iter_chips open nothing: signing happens at open time
    got = np.concatenate([b.pixels for b in stream])
    assert seen and set(seen) <= set(back) and all(h.startswith(MOVED) for h in seen)
    want = np.concatenate([b.pixels for b in iter_chips([item], aoi=aois("liverpool"), batch_size=64)])
    np.testing.assert_array_equal(got, want)


def test_default_patch_url_signs_only_planetary_computer_hrefs(shared_data, bundled_items):
    cassettes = shared_data / "stac-items" / "pystac-client-cassettes"
    pc = pystac.Item.from_file(str(cassettes / "LC09_L2SR_084073_20250722_02_T1.json"))
    es = pystac.Item.from_file(str(cassettes / "LC08_L2SP_033032_20231008_02_T1.json"))
    pc_href, es_href = pc.assets["red"].href, es.assets["red"].href
    local = bundled_items[LIVERPOOL].assets["red"].href
    assert is_planetary_computer(pc_href)
    assert not is_planetary_computer(es_href) and not is_planetary_computer(local)
    assert default_patch_url(es_href) == es_href and default_patch_url(local) == local
    assert default_patch_url(pc_href + "?st=x&sig=y") == pc_href + "?st=x&sig=y"  # signed already
    if importlib.util.find_spec("planetary_computer") is None:
        with pytest.raises(SignerMissingError, match=r"pip install 'geomoe\[pc\]'"):
            default_patch_url(pc_href)
    else:  # pragma: no cover - the pc extra is installed
        assert default_patch_url(pc_href).startswith(pc_href + "?")


@pytest.mark.skipif(importlib.util.find_spec("planetary_computer") is not None,
                    reason="the pc extra is installed")
def test_embed_refuses_planetary_computer_items_without_the_signer_before_reading(shared_data):
    from geomoe.embed.pipeline import check_assets

    cassettes = shared_data / "stac-items" / "pystac-client-cassettes"
    pc = pystac.Item.from_file(str(cassettes / "LC09_L2SR_084073_20250722_02_T1.json"))
    spec = types.SimpleNamespace(chips=np.array([(pc.id,)], dtype=[("item_id", "U64")]))
    with pytest.raises(SignerMissingError, match=r"geomoe\[pc\]"):
        check_assets([pc], [spec])
