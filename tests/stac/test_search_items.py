"""Search builds pystac Items only for the items it keeps, and copies nothing it owns: the items
it returns must still be exactly what pystac-client / pystac would have built, and the caller's
own (editing them changes no later search)."""

from __future__ import annotations

import copy
import json
import warnings

import pystac
import pystac_client
import pytest

from geomoe.stac.search import LandsatPlatformWarning, open_catalog, search_catalog

from tests.stac.test_api import NORTH_AMERICA, OLD, WORLD

COLLECTION = "landsat-c2-l2"


def quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LandsatPlatformWarning)
        return search_catalog(*args, **kwargs)


def _with_both_proj_fields(d: dict) -> dict:
    """What geomoe adds to pystac's reading: `proj:epsg` beside the migrated `proj:code`."""
    for fields in [d["properties"], *d["assets"].values()]:
        code = fields.get("proj:code")
        if isinstance(code, str) and code.startswith("EPSG:") and "proj:epsg" not in fields:
            fields["proj:epsg"] = int(code.split(":")[1])
    return d


def test_api_items_are_pystac_clients_items(stac_api):
    """Several pages, many items: each returned item is, field for field, the Item that
    pystac-client's own `items()` builds for it (plus proj:epsg), in (datetime, id) order."""
    res = quiet(stac_api.url, WORLD, limit=3)
    assert res.pages >= 7 and len(res.items) == 17
    client = pystac_client.Client.open(stac_api.url)
    ref = [it for it in client.search(collections=[COLLECTION], intersects=WORLD,
                                      limit=3).items() if it.id not in OLD]
    ref.sort(key=lambda it: (it.datetime, it.id))
    assert [it.id for it in res.items] == [it.id for it in ref]
    for got, want in zip(res.items, ref):
        assert got.to_dict() == _with_both_proj_fields(want.to_dict())
        assert got.get_root() is not None and got.get_root().get_self_href() == \
            want.get_root().get_self_href()


def test_static_walk_builds_only_the_items_it_keeps(real_items, monkeypatch):
    """Item files outside the AOI are judged on their JSON and never become pystac Items."""
    built: list[str] = []
    from_dict = pystac.Item.from_dict.__func__

    def counting(cls, d, *args, **kwargs):
        built.append(d["id"])
        return from_dict(cls, d, *args, **kwargs)

    monkeypatch.setattr(pystac.Item, "from_dict", classmethod(counting))
    res = quiet(real_items.static_collection, NORTH_AMERICA)
    assert res.fetched == 20
    kept = [it.id for it in res.items]
    assert kept == ["LC08_L2SP_047027_20201204_02_T1", "LC08_L2SP_033032_20231008_02_T1"]
    assert sorted(built) == sorted(kept)  # not the other 18
    # the reading is pystac's own: same dict as pystac's walk gives (asset hrefs made absolute)
    walked = {it.id: it for it in pystac.read_file(str(real_items.static_collection))
              .get_items(recursive=True)}
    for it in res.items:
        want = walked[it.id].clone()
        for asset in want.assets.values():
            asset.href = asset.get_absolute_href()
        assert it.to_dict() == _with_both_proj_fields(want.to_dict())


@pytest.mark.parametrize("kind", ["api", "static", "item-collection"])
def test_results_are_the_callers_own(stac_api, real_items, kind, tmp_path):
    """Two searches through one handle: editing the first result leaves the second intact
    (an item collection's Items are built once, when it is opened: those are copied)."""
    if kind == "item-collection":
        src = tmp_path / "items.json"
        src.write_text(json.dumps({"type": "FeatureCollection", "features": real_items.items}))
    else:
        src = stac_api.url if kind == "api" else real_items.static_collection
    handle = open_catalog(src)
    first = quiet(handle, NORTH_AMERICA).items
    pristine = copy.deepcopy([it.to_dict() for it in first])  # to_dict shares the dicts
    for it in first:
        it.properties["eo:cloud_cover"] = -1
        it.assets["red"].href = "/nowhere"
    second = quiet(handle, NORTH_AMERICA).items
    assert [it.to_dict() for it in second] == pristine
    assert all(a is not b for a, b in zip(first, second))
