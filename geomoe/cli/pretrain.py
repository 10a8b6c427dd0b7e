"""`geomoe pretrain`: MAE pretraining on chips streamed from a STAC catalog; `--resume` continues."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from geomoe.cli.common import add_search_arguments
from geomoe.options import (fraction, non_negative_float,
                             non_negative_int, open_fraction, positive_float, positive_int)
from geomoe.model.config import SIZES

#: The bundled Europe AOI, by name (see geomoe.resources.aoi_names).
DEFAULT_AOI = "europe"

#: CLI option -> TrainConfig field (options default to None so a resume keeps the saved value).
_CONFIG_OPTS = {
    "size": "size", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps", "checkpoint_every": "checkpoint_every", "seed": "seed",
    "min_valid": "min_valid", "device": "device", "mask_ratio": "mask_ratio",
    "precision": "precision", "compile": "compile",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the MoE-MAE on chips streamed from a STAC catalog",
        description="Masked-autoencoder pretraining on 40x40 chips streamed from STAC (AdamW, "
        "warm-up + cosine, checkpoints every --checkpoint-every steps; --resume continues exactly).",
    )
    p.add_argument("--aoi", default=DEFAULT_AOI,
                   help="GeoJSON file, URL, inline GeoJSON or a bundled AOI name (default: europe; "
                        "also liverpool)")
    add_search_arguments(p)
    p.add_argument("--steps", type=positive_int, default=None,
                   help="total optimizer steps of the run (default 1000; on --resume: the saved "
                   "value, a larger one extends the schedule)")
    p.add_argument("--out", required=True, help="run folder (state/, metrics.csv, previews/, ...)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the geomoe run in --out (only the files geomoe wrote) and a "
                   "geomoe checkpoint at --export; without it both are refused")
    p.add_argument("--init-from", default=None,
                   help="start from the weights of a geomoe/published checkpoint (fine-tuning)")
    p.add_argument("--size", default=None, choices=list(SIZES), help="model size (default S)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="chips per step (default 64)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 3e-4)")
    p.add_argument("--weight-decay", type=non_negative_float, default=None, help="AdamW weight decay (0.05)")
    p.add_argument("--warmup-steps", type=non_negative_int, default=None, help="default 5%% of --steps")
    p.add_argument("--mask-ratio", type=open_fraction, default=None, help="masked fraction (0.75)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps between checkpoints (100)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="random seed (0)")
    p.add_argument("--min-valid", type=fraction, default=None,
                   help="skip chips with a smaller valid (clear, non-fill) fraction (0.9)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 autocast on CUDA and on CPUs with native bf16 "
                   "(AVX512-BF16/AMX), where it is faster than fp32; else fp32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training step (off by default): faster steps after "
                   "minutes of compiling at the first one, so it pays off for long runs "
                   "(figures: benchmarks/README.md)")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="stop (with a checkpoint, resumable) after this much training time")
    p.add_argument("--stop-at-step", type=positive_int, default=None,
                   help="stop (with a checkpoint, resumable) after this step; the LR schedule "
                   "still follows --steps, so a run can be reproduced exactly up to any step")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch compute threads (default and maximum: the cores this process may use)")
    p.add_argument("--export", default=None,
                   help="also copy the final model.safetensors to this path")
    p.set_defaults(func=run, on_interrupt=_interrupted)


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupt kept (printed by geomoe.cli on Ctrl-C / SIGTERM)."""
    state = Path(args.out) / "state" / "latest.pt"
    if state.is_file():
        return (f"the last checkpoint ({state}, written every --checkpoint-every steps) is kept; "
                "rerun the same command with --resume to continue from it")
    return f"no checkpoint was written yet in {args.out}; rerun the same command to start again"


def _config_from_args(args: argparse.Namespace, out: Path):
    from geomoe.train.loop import TrainConfig

    given = {f: getattr(args, o) for o, f in _CONFIG_OPTS.items() if getattr(args, o) is not None}
    if args.steps is not None:
        given["steps"] = args.steps
    if args.resume and (out / "run.json").is_file():
        saved = json.loads((out / "run.json").read_text())["config"]
        base = TrainConfig.from_json(saved)
    else:
        base = TrainConfig()
    import dataclasses

    return dataclasses.replace(base, **given)


def run(args: argparse.Namespace) -> int:
    from geomoe.stac.search import search
    from geomoe.device import limit_threads
    from geomoe.train.loop import check_run_folder, train

    threads = limit_threads(args.threads)
    out = Path(args.out)
    config = _config_from_args(args, out)
    if not args.resume:
        check_run_folder(out, overwrite=args.overwrite)
    if args.export:
        check_export(Path(args.export), overwrite=args.overwrite)
    items = search(args.catalog, args.aoi, datetime=args.datetime, max_cloud=args.max_cloud)
    print(f"{len(items)} items from {args.catalog or 'the bundled catalog'}; size {config.size}, "
          f"{config.steps} steps of {config.batch_size} chips on {threads} thread(s) -> {out}")
    from geomoe.stac.aoi import load_aoi

    res = train(
        items, out, config, aoi=load_aoi(args.aoi, area=True), resume=args.resume,
        init_from=args.init_from, overwrite=args.overwrite and not args.resume,
        stop_at_step=args.stop_at_step,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
        data_info={"catalog": args.catalog or "bundled", "aoi": args.aoi,
                   "datetime": args.datetime, "max_cloud": args.max_cloud},
    )
    print(f"{res.stopped}: step {res.step}/{res.steps}, loss {res.final_loss:.4f}, "
          f"{res.mean_chips_per_s:.0f} chips/s, {res.elapsed_s:.0f} s; model -> {res.model_path}; "
          f"preview -> {res.preview_path}")
    if args.export:
        from geomoe.atomic import atomic_write

        dst = atomic_write(args.export, lambda tmp: shutil.copyfile(res.model_path, tmp))
        print(f"exported {dst}")
    return 0


def check_export(dst: Path, *, overwrite: bool) -> None:
    """Refuse an --export path that holds a file: a geomoe checkpoint only with --overwrite,
    anything else never (checked before training, so nothing is lost at the end)."""
    from geomoe.model import load_checkpoint
    from geomoe.train.loop import RunFolderError

    if dst.is_dir():
        raise RunFolderError(f"--export {dst} is a folder: give a file path (.safetensors)")
    if not dst.exists():
        return
    try:
        load_checkpoint(dst)
        ours = dst.suffix == ".safetensors"
    except Exception:  # noqa: BLE001 - any unreadable file is "not ours"
        ours = False
    if not ours:
        raise RunFolderError(f"--export {dst} exists and is not a geomoe checkpoint: it is never "
                             "replaced; choose another --export path")
    if not overwrite:
        raise RunFolderError(f"--export {dst} already holds a geomoe checkpoint: pass --overwrite "
                             "to replace it, or choose another --export path")
