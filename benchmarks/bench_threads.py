"""Benchmark: embed-region chips/s on a quiet machine and beside a busy process, for torch's
default thread count vs geomoe's (geomoe.device.limit_threads) vs one thread, side by side.

    python benchmarks/bench_threads.py [--scene-px 400] [--busy 1] [--size S] [--batch-size 64]

Data: the synthetic Landsat-like COG mosaic of benchmarks/bench_chips.py as a static STAC
collection (as bench_embed.py), min_valid=0 so every chip meets the model. Each timing runs in
its own process (torch's thread pool is per process): ``torch-default`` sets nothing (torch's
threads and libgomp's default spin-wait), ``geomoe`` is what the CLI does (limit_threads(): the
cores this process may use, and the short OpenMP spin of geomoe.OPENMP_SPINCOUNT), ``1-thread``
is ``--threads 1`` with the short spin too. The busy process is ``--busy`` pure-Python spinners, started
before and stopped after each busy timing. chips/s is steady state (first to last progress
callback). The CPU model, its flags and the load average before each run are printed: on a
shared machine the numbers move with what else runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import describe  # benchmarks/machine.py: CPU model, cores, flags

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["torch-default", "geomoe", "1-thread"]
SPIN = "while True: pass"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _child(setting: str, coll: str, aoi: str, ckpt: str, out: str, batch_size: int) -> None:
    import torch

    from geomoe.device import limit_threads

    if setting == "geomoe":
        limit_threads()
    elif setting == "1-thread":
        limit_threads(1)
    e2e = _load("bench_embed").end_to_end(Path(coll), json.loads(aoi), Path(ckpt), Path(out),
                                          batch_size, precision="fp32")
    print(json.dumps({**e2e, "threads": torch.get_num_threads()}))


def _child_env(setting: str) -> dict[str, str]:
    """The child's environment: libgomp's default spin for ``torch-default``, geomoe's otherwise
    (libgomp reads it when torch loads, which the child does before importing geomoe)."""
    from geomoe import OPENMP_SPINCOUNT

    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if setting != "torch-default":
        env["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene-px", type=int, default=400, help="synthetic scene side (4 scenes)")
    ap.add_argument("--busy", type=int, default=1, help="busy spinner processes (default 1)")
    ap.add_argument("--size", default="S", choices=["S", "XS", "XXS"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        s, coll, aoi, ckpt, out, bs = args.child
        _child(s, coll, aoi, ckpt, out, int(bs))
        return
    print(describe(), flush=True)
    be, bc = _load("bench_embed"), _load("bench_chips")
    root = Path(tempfile.mkdtemp(prefix="geomoe-bench-threads-"))
    items = bc.make_mosaic(root / "cogs", args.scene_px)
    coll = be.write_collection(root, items)
    ckpt = be.checkpoint(root, args.size)
    aoi = json.dumps(bc.aoi_for(items, "big"))
    results: dict[str, dict[str, dict]] = {}
    for load in ("quiet", f"busy({args.busy})"):
        spinners = [] if load == "quiet" else [subprocess.Popen([sys.executable, "-c", SPIN])
                                               for _ in range(args.busy)]
        try:
            time.sleep(0 if load == "quiet" else 1.0)
            for setting in SETTINGS:
                la = os.getloadavg()[0]
                out = root / f"{load}-{setting}.zarr"
                res = subprocess.run([sys.executable, __file__, "--child", setting, str(coll), aoi, str(ckpt),
                                      str(out), str(args.batch_size)], capture_output=True, text=True,
                                     check=True, env=_child_env(setting))
                r = {**json.loads(res.stdout.strip().splitlines()[-1]), "loadavg_1min": la}
                results.setdefault(load, {})[setting] = r
                print(f"[{load:8s}] {setting:13s}: {r['steady_chips_per_s']:7.1f} chips/s steady, "
                      f"{r['wall_chips_per_s']:7.1f} incl. start-up ({r['chips']} chips, {r['threads']} "
                      f"torch thread(s), load average {la:.2f} before)", flush=True)
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    print(json.dumps({"size": args.size, "batch_size": args.batch_size, "busy": args.busy,
                      "results": results}))


if __name__ == "__main__":
    main()
