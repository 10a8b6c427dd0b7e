"""Benchmark: embed-region end to end vs the model alone, and peak memory small vs 4x AOI.

    python benchmarks/bench_embed.py [--scene-px 1000] [--batch-size 256] [--size S] [--keep DIR]
    python benchmarks/bench_embed.py --modes fp32 bf16 bf16+compile   # precisions side by side

Data: the synthetic 2x2-scene Landsat-like COG mosaic of benchmarks/bench_chips.py (real
file format and read path: deflate COGs + QA_PIXEL), written as a static STAC collection.
Correctness is tested on real data in tests/cube; this measures speed and memory only.

Reports (JSON on the last line):
- model_chips_per_s: model.embed alone on pre-made z-scored batches (same batch size,
  same threads, same metadata inputs) = the ceiling;
- e2e_chips_per_s: geomoe.embed.pipeline.embed_region over the 4-scene AOI (search, plan, read,
  mask, z-score, embed, Zarr region writes), min_valid=0 so every chip meets the model;
  measured from its first to its last progress callback (steady state) and over the whole
  call (incl. start-up), each as a ratio to the model-only figure (target >= 0.8);
- peak RSS of a subprocess embedding the 1-scene AOI vs the 4-scene AOI (target <= 1.2x);
- with several ``--modes`` (precision, +compile), each one's figures and its e2e speed relative
  to the first mode, all in one process on the same data.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODES = ["auto", "fp32", "bf16", "bf16+compile"]


def _bench_chips():
    spec = importlib.util.spec_from_file_location("bench_chips", REPO / "benchmarks" / "bench_chips.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_collection(root: Path, items: list[dict]) -> Path:
    """Static STAC collection (collection.json + item files) over the synthetic scenes."""
    import pystac

    coll = pystac.Collection(
        id="synthetic-mosaic", description="geomoe benchmark mosaic (synthetic pixels)",
        extent=pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                             pystac.TemporalExtent([[None, None]])), license="CC0-1.0")
    for d in items:
        it = pystac.Item.from_dict(d)
        it.properties["eo:cloud_cover"] = 10.0
        coll.add_item(it)
    coll.normalize_hrefs(str(root / "stac"))
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "stac" / "collection.json"


def checkpoint(root: Path, size: str) -> Path:
    demo = REPO / "checkpoints" / "geomoe-demo-S.safetensors"
    if size == "S" and demo.is_file():
        return demo
    import torch

    from geomoe.model import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model(size), root / f"bench-{size}.safetensors")


def model_only(ckpt: Path, batch_size: int, n_chips: int, precision: str = "auto",
               compile: bool = False) -> tuple[float, float]:
    """-> (chips/s, seconds of the first, warm-up call: includes compiling, once per process).

    Inputs are made under inference_mode, as embed-region makes them, so a compiled graph is
    shared with the e2e run (the kind of input tensor is part of the graph's guards).
    """
    import torch

    from geomoe.device import autocast
    from geomoe.embed.pipeline import get_model
    from geomoe.model import checkpoint_sha256

    model = get_model(ckpt, checkpoint_sha256(ckpt), torch.device("cpu"), compile=compile, precision=precision)
    rng = np.random.default_rng(0)
    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
        x = torch.from_numpy(rng.standard_normal((batch_size, 7, 40, 40)).astype(np.float32))
        meta = {k: torch.from_numpy(rng.standard_normal((batch_size, 2)).astype(np.float32))
                for k in ("week", "hour", "lat", "lon")}
        t = time.perf_counter()
        model.embed(x, **meta)  # warm-up (and compile)
        warm = time.perf_counter() - t
        n_batches = max(2, n_chips // batch_size)
        t = time.perf_counter()
        for _ in range(n_batches):
            model.embed(x, **meta).numpy()
        return n_batches * batch_size / (time.perf_counter() - t), warm


def end_to_end(collection: Path, aoi: dict, ckpt: Path, out: Path, batch_size: int,
               precision: str = "auto", compile: bool = False) -> dict:
    from geomoe.embed.pipeline import embed_region

    marks: list[tuple[float, int]] = []
    t = time.perf_counter()
    s = embed_region(json.dumps(aoi), catalog=str(collection), checkpoint=ckpt, out=out,
                     batch_size=batch_size, min_valid=0.0, precision=precision, compile=compile,
                     progress=lambda p: marks.append((time.perf_counter(), p.done)))
    wall = time.perf_counter() - t
    steady = ((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
              if len(marks) > 2 and marks[-1][0] > marks[0][0] else float("nan"))
    return {"chips": s.chips_embedded, "wall_s": wall, "wall_chips_per_s": s.chips_embedded / wall,
            "steady_chips_per_s": steady}


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def _child(argv: list[str]) -> None:
    collection, aoi_json, ckpt, out, bs = argv
    import geomoe.chips.plan  # noqa: F401  (imports before the baseline)
    import geomoe.embed.pipeline  # noqa: F401
    import geomoe.model  # noqa: F401

    base = _vm("VmHWM")
    r = end_to_end(Path(collection), json.loads(aoi_json), Path(ckpt), Path(out), int(bs))
    print(json.dumps({**r, "base_mb": base, "peak_mb": _vm("VmHWM")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene-px", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--size", default="S", choices=["S", "XS", "XXS"])
    ap.add_argument("--keep", default=None, help="keep the generated data in this folder")
    ap.add_argument("--modes", nargs="+", default=["auto"], choices=MODES,
                    help="precision[+compile] of the model, each timed in turn (default: auto = fp32 on CPU)")
    ap.add_argument("--memory-only", action="store_true", help="skip the speed comparison")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return
    bc = _bench_chips()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="geomoe-bench-embed-"))
    root.mkdir(parents=True, exist_ok=True)
    items = bc.make_mosaic(root / "cogs", args.scene_px)
    coll = write_collection(root, items)
    ckpt = checkpoint(root, args.size)
    big, small = bc.aoi_for(items, "big"), bc.aoi_for(items, "small")

    mem = {}
    for which, aoi in (("small", small), ("big", big)):
        res = subprocess.run([sys.executable, __file__, "--child", str(coll), json.dumps(aoi), str(ckpt),
                              str(root / f"mem-{which}.zarr"), str(args.batch_size)],
                             capture_output=True, text=True, check=True)
        mem[which] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"peak RSS {which:5s} : {mem[which]['peak_mb']:8.1f} MB ({mem[which]['chips']} chips)")
    ratio_mem = mem["big"]["peak_mb"] / mem["small"]["peak_mb"]
    if args.memory_only:
        print(json.dumps({"peak_rss_small_mb": mem["small"]["peak_mb"], "peak_rss_big_mb": mem["big"]["peak_mb"],
                          "chips_small": mem["small"]["chips"], "chips_big": mem["big"]["chips"],
                          "peak_rss_ratio": round(ratio_mem, 3)}))
        return
    n_est = 4 * (args.scene_px // 40) ** 2
    results = {}
    for mode in args.modes:
        precision, _, comp = mode.partition("+")
        how = {"precision": precision, "compile": bool(comp)}
        mo_before, warm = model_only(ckpt, args.batch_size, n_est // 2, **how)
        e2e = end_to_end(coll, big, ckpt, root / f"e2e-{mode}.zarr", args.batch_size, **how)
        mo_after, _ = model_only(ckpt, args.batch_size, n_est // 2, **how)
        mo = (mo_before + mo_after) / 2  # bracket the e2e run: the machine is shared
        print(f"[{mode}] model only : {mo:8.1f} chips/s (size {args.size}, batch {args.batch_size}; "
              f"{mo_before:.1f} before, {mo_after:.1f} after the e2e run; first call {warm:.1f} s"
              f"{' incl. compiling, the e2e run reuses the graph' if how['compile'] else ''})")
        print(f"[{mode}] end to end : {e2e['steady_chips_per_s']:8.1f} chips/s steady, "
              f"{e2e['wall_chips_per_s']:.1f} chips/s incl. start-up ({e2e['chips']} chips, {e2e['wall_s']:.1f} s)")
        results[mode] = {
            "chips": e2e["chips"], "model_chips_per_s": round(mo, 1), "model_first_call_s": round(warm, 1),
            "model_chips_per_s_before_after": [round(mo_before, 1), round(mo_after, 1)],
            "e2e_steady_chips_per_s": round(e2e["steady_chips_per_s"], 1),
            "e2e_wall_chips_per_s": round(e2e["wall_chips_per_s"], 1),
            "ratio_steady": round(e2e["steady_chips_per_s"] / mo, 3),
            "ratio_wall": round(e2e["wall_chips_per_s"] / mo, 3),
        }
        print(f"[{mode}] ratio e2e/model : {results[mode]['ratio_steady']:.2f} steady, "
              f"{results[mode]['ratio_wall']:.2f} incl. start-up (target >= 0.8)")
    first = args.modes[0]
    for mode in args.modes[1:]:
        r = {k: results[mode][k] / results[first][k] for k in ("e2e_steady_chips_per_s", "e2e_wall_chips_per_s")}
        print(f"{mode} vs {first}, end to end: {r['e2e_steady_chips_per_s']:.2f}x steady, "
              f"{r['e2e_wall_chips_per_s']:.2f}x incl. start-up")
    result = {
        "batch_size": args.batch_size, "size": args.size, **results[first], "modes": results,
        "peak_rss_small_mb": round(mem["small"]["peak_mb"], 1),
        "peak_rss_big_mb": round(mem["big"]["peak_mb"], 1),
        "chips_small": mem["small"]["chips"], "chips_big": mem["big"]["chips"],
        "peak_rss_ratio": round(ratio_mem, 3),
    }
    print(f"peak RSS 4x/1x: {result['peak_rss_ratio']:.2f} (target <= 1.2)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
