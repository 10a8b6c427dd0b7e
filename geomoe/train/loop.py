"""MAE pretraining of geomoe's MoE-MAE on chips streamed from STAC, resumable to the bit.

A run lives in one folder (``out``):

- ``state/latest.pt``  training state (model, AdamW, LR schedule, every RNG, data position,
  preview chips), written atomically every ``checkpoint_every`` steps and at the end; loads with
  ``weights_only=True``.
- ``model.safetensors``  the model exported with `geomoe.model.save_checkpoint` (what
  `geomoe embed-region --checkpoint` and `geomoe probe --checkpoint` take).
- ``metrics.csv``  one row per step: loss terms, MoE loss, LR, grad norm, chips/s.
- ``previews/step_XXXXXXX.png``  input RGB / masked input / reconstruction at each checkpoint.
- ``run.json``  what the run trained on (catalog, AOI, item count, the latest scene datetime
  ``data_end``) and where it stopped; the scheduled retraining reads it. Its ``kind`` marks the
  folder as a geomoe run: only such a folder can be replaced (``overwrite``), and only the files
  listed here are removed.

Exact resume: everything random is drawn from state that is saved (global torch RNG for routing
noise, a dedicated CPU generator for the masks, numpy/python RNGs, and the chip stream whose order
is a pure function of (seed, epoch)). So N steps + resume + N steps == 2N steps on CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geomoe.atomic import atomic_write, read_json_object, remove_stale_tmp
from geomoe.chips.bands import Normalisation
from geomoe.device import resolve_device, train_bf16
from geomoe.errors import GeomoeError
from geomoe.train.stream import ShuffledChipStream
from geomoe.train.state import (
    ResumeMismatchError,
    capture_rng,
    load_state,
    restore_rng,
    save_state,
)

if TYPE_CHECKING:
    from geomoe.chips.plan import ChipBatch

METRIC_FIELDS = (
    "step", "epoch", "loss", "loss_masked", "loss_unmasked", "moe_loss", "lr", "grad_norm",
    "chips_per_s", "data_s", "step_s", "elapsed_s",
)
#: What `run.json` says a folder is: the mark that lets geomoe replace a run with --overwrite.
RUN_KIND = "geomoe-pretrain-run"
#: The preview chips' fields a training state keeps.
_PREVIEW = ("pixels", "week", "hour", "lat", "lon", "item_id")


class TrainConfigError(GeomoeError, ValueError):
    """A training setting is out of its valid range (checked before anything is written)."""


class RunFolderError(GeomoeError):
    """`out` holds a run (or files) that a new run would silently replace."""


#: Settings that must not change when a run resumes (they change what step k means).
_FROZEN_ON_RESUME = ("size", "batch_size", "seed", "mask_ratio", "min_valid", "lr",
                     "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip")


@dataclass
class TrainConfig:
    """Hyper-parameters of a pretraining run (JSON-able; stored in the run folder)."""

    size: str = "S"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None  # None: 5 % of steps (at least 1, at most 500)
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    mask_ratio: float = 0.75
    checkpoint_every: int = 100
    seed: int = 0
    min_valid: float = 0.9
    shuffle_buffer: int = 2048
    max_cache_chips: int = 8192
    device: str = "auto"  # "auto" = cuda when available, else cpu
    precision: str = "auto"  # auto | fp32 | bf16; auto = bf16 autocast where native (geomoe.device.train_bf16)
    compile: bool = False  # torch.compile the training pass (geomoe.model.compile_for_training)
    n_preview: int = 4

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise TrainConfigError naming the first setting out of range (and its CLI option).

        Checked on construction and again by `train`, so the CLI, the Python API and the Prefect
        flow all refuse bad numbers before a run folder is created.
        """
        from geomoe.model.config import SIZES, config_for

        if str(self.size).upper() not in SIZES:
            _bad("size", f"one of {', '.join(SIZES)}", self.size)
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 1)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("shuffle_buffer", self.shuffle_buffer, 0)
        _check_int("max_cache_chips", self.max_cache_chips, 0)
        _check_int("n_preview", self.n_preview, 1)
        _check_num("lr", self.lr, "> 0", lambda v: v > 0)
        _check_num("weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        _check_num("min_valid", self.min_valid, "in [0, 1]", lambda v: 0 <= v <= 1)
        _check_num("min_lr_ratio", self.min_lr_ratio, "in [0, 1]", lambda v: 0 <= v <= 1)
        _check_num("grad_clip", self.grad_clip, "> 0", lambda v: v > 0)
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(_is_num(b) and 0 <= b < 1 for b in betas):
            _bad("betas", "two numbers in [0, 1)", self.betas)
        n = config_for(self.size).num_patches
        _check_num("mask_ratio", self.mask_ratio, "in (0, 1) exclusive",
                   lambda v: 0 < v < 1)
        keep = int(round(n * (1.0 - self.mask_ratio)))
        if not 1 <= keep <= n - 1:
            _bad("mask_ratio", f"in (0, 1) with at least one visible and one masked patch of "
                 f"{n} (about {0.5 / n:g} to {1 - 0.5 / n:g}); it keeps {keep}", self.mask_ratio)
        if self.precision not in ("auto", "fp32", "bf16"):
            _bad("precision", "auto, fp32 or bf16", self.precision)

    def resolved_warmup(self) -> int:
        if self.warmup_steps is not None:
            return max(0, int(self.warmup_steps))
        return int(min(500, max(1, self.steps // 20)))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if "amp" in d and "precision" not in d:  # run folders written before `precision`
            d = {**d, "precision": "auto" if d["amp"] else "fp32"}
        d = {k: v for k, v in d.items() if k in known}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bad(name: str, valid: str, got: Any, option: str | None = None) -> None:
    raise TrainConfigError(f"{name} ({option or _option(name)}) must be {valid}; got {got!r}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_int(name: str, v: Any, lo: int) -> None:
    if not (_is_num(v) and float(v).is_integer() and v >= lo):
        _bad(name, f"an integer >= {lo}", v)


def _check_num(name: str, v: Any, valid: str, ok: Callable[[float], bool],
               option: str | None = None) -> None:
    if not (_is_num(v) and math.isfinite(float(v)) and ok(float(v))):
        _bad(name, valid, v, option)


@dataclass
class TrainResult:
    out: Path
    step: int
    steps: int
    stopped: str  # "done" | "stop_at_step" | "time_limit"
    final_loss: float
    mean_chips_per_s: float
    elapsed_s: float
    model_path: Path
    state_path: Path
    metrics_path: Path
    preview_path: Path | None
    data_end: str | None
    n_items: int
    extra: dict[str, Any] = field(default_factory=dict)


class WarmupCosine:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine down to `min_ratio`."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def items_digest(items: Sequence[Any]) -> str:
    """Identity of the training set (item ids, in order): a resume on other data is refused."""
    h = hashlib.sha256()
    for it in items:
        h.update(str(getattr(it, "id", it)).encode())
        h.update(b"\n")
    return h.hexdigest()


def data_end(items: Sequence[Any]) -> str | None:
    """Latest acquisition datetime (UTC ISO) among `items`: where a scheduled retrain continues."""
    stamps = [it.datetime for it in items if getattr(it, "datetime", None) is not None]
    if not stamps:
        return None
    latest = max(s if s.tzinfo else s.replace(tzinfo=timezone.utc) for s in stamps)
    return latest.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------- tensors
def chips_to_tensors(
    chips: ChipBatch, norm: Normalisation, device: torch.device
) -> dict[str, torch.Tensor]:
    """ChipBatch -> model inputs: images (N,7,40,40) z-scored with the model's ``norm``
    (``model.normalisation``) as float32, and the (N,2) metadata."""
    images = torch.from_numpy(norm(chips.pixels))
    out = {"images": images}
    for k in ("week", "hour", "lat", "lon"):
        out[k] = torch.from_numpy(np.ascontiguousarray(getattr(chips, k), dtype=np.float32))
    return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def _set_normalisation(model: torch.nn.Module, norm: Normalisation) -> None:
    """Give ``model`` the statistics its weights were trained with (they travel in its config)."""
    model.config = dataclasses.replace(model.config, norm_mean=norm.mean, norm_std=norm.std)


def random_ids_keep(
    batch: int, n_patches: int, mask_ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """(B, n_keep) int64 indices of visible patches, random per sample, from `generator` (CPU)."""
    n_keep = int(round(n_patches * (1.0 - mask_ratio)))
    noise = torch.rand(batch, n_patches, generator=generator)
    return torch.argsort(noise, dim=1)[:, :n_keep]


# ---------------------------------------------------------------------------------- training
def train(
    items: Sequence[Any],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    aoi: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | Path | None = None,
    stop_at_step: int | None = None,
    max_seconds: float | None = None,
    data_info: dict[str, Any] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Pretrain (or resume, or fine-tune from `init_from`) on the chips of `items` within `aoi`.

    `stop_at_step` / `max_seconds` end the run early with a checkpoint, so it can be resumed;
    `on_step(row)` and `on_checkpoint(info)` let a caller (the Prefect flow) publish progress.

    Without `resume`, an `out` that holds a trained run is refused unless `overwrite` is given,
    which replaces only the files geomoe wrote for that run; a non-empty folder that is not a
    geomoe run is always refused. Weights are written only after the first optimizer step.
    """
    from geomoe.model import build_model, load_checkpoint, save_checkpoint

    out = Path(out)
    state_path = out / "state" / "latest.pt"
    metrics_path = out / "metrics.csv"
    model_path = out / "model.safetensors"
    say = log or (lambda _msg: None)

    # every cheap check first: nothing is written (or deleted) before they all pass
    if config is not None:
        config.validate()
    if stop_at_step is not None:
        _check_int("stop_at_step", stop_at_step, 1)
    if max_seconds is not None:
        _check_num("max_seconds", max_seconds, "> 0", lambda v: v > 0, option="--max-minutes * 60")
    if resume and overwrite:
        raise TrainConfigError(
            f"resume and overwrite exclude each other: resume continues the run in {out}, "
            "overwrite replaces it; pass one of them"
        )
    if not resume:
        check_run_folder(out, overwrite=overwrite)
    digest = items_digest(items)

    remove_stale_tmp(state_path.parent)  # torn temp files of a run killed mid-save
    state: dict[str, Any] | None = None
    if resume:
        state = load_state(state_path)
        saved = TrainConfig.from_json(state["config"])
        config = _merge_resume_config(saved, config, state_path)
        if state.get("items_sha256") != digest:
            raise ResumeMismatchError(
                f"cannot resume {out}: the search now returns other items than the run trained "
                f"on ({len(items)} items now); pass the same --catalog/--aoi/--datetime, or "
                "start a new run (new --out, optionally --init-from the old model.safetensors)"
            )
    config = config or TrainConfig()

    device = resolve_device(config.device)
    use_amp = train_bf16(device, config.precision)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    import random as _random

    _random.seed(config.seed)

    model = build_model(config.size)
    if init_from is not None and state is None:
        base = load_checkpoint(init_from, map_location="cpu")
        if base.config.size != config.size:
            raise ResumeMismatchError(
                f"--init-from {init_from} is a size-{base.config.size} model but this run is "
                f"size {config.size}: pass --size {base.config.size}"
            )
        model.load_state_dict(base.state_dict())
        _set_normalisation(model, base.normalisation)  # the weights keep their statistics
        del base
    if state is not None and "normalisation" in state:  # older states: the published ones
        _set_normalisation(model, Normalisation(**state["normalisation"]))
    model.to(device)
    if config.compile:
        from geomoe.model import compile_for_training

        compile_for_training(model)  # compiles at the first step
    norm = model.normalisation
    decay, no_decay = _param_groups(model)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=tuple(config.betas),
        fused=device.type in ("cpu", "cuda"),  # one kernel over all parameters: 3 vs 13 ms per CPU step (size S)
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(config.resolved_warmup(), config.steps, config.min_lr_ratio)
    )
    mask_gen = torch.Generator().manual_seed(config.seed + 1)
    stream = ShuffledChipStream(
        items, aoi, seed=config.seed, min_valid=config.min_valid,
        shuffle_buffer=config.shuffle_buffer, max_cache_chips=config.max_cache_chips,
    )

    step = 0
    elapsed_before = 0.0
    if state is not None:
        if state["model_size"] != config.size:  # pragma: no cover - caught by the merge above
            raise ResumeMismatchError(f"state is size {state['model_size']}, run is {config.size}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ResumeMismatchError(
                f"the training state in {state_path} does not fit a size-{config.size} model: {exc}"
            ) from exc
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        # the schedule's length may have been extended with --steps: rebuild its lambda
        sched.lr_lambdas = [WarmupCosine(config.resolved_warmup(), config.steps, config.min_lr_ratio)
                            for _ in opt.param_groups]
        mask_gen.set_state(state["mask_generator"])
        restore_rng(state["rng"])
        stream.seek(**state["data_position"])
        # pixels, metadata and item ids; a preview has no grid position (older states: time)
        from geomoe.chips.plan import ChipBatch

        preview = ChipBatch(**{k: _np(v) for k, v in state["preview"].items() if k in _PREVIEW})
        step = int(state["step"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        _truncate_metrics(metrics_path, step)
        say(f"resumed {out} at step {step}/{config.steps} (epoch {stream.epoch}, "
            f"chip {stream.offset})")
    else:
        # preview chips: the first chips of a separate stream pass, fixed for the whole run
        peek = ShuffledChipStream(items, aoi, seed=config.seed + 7, min_valid=config.min_valid,
                          shuffle_buffer=config.shuffle_buffer,
                          max_cache_chips=config.max_cache_chips)
        if stream.mode == "cache":
            peek._cache = stream._fill_cache()  # same chips, no second read
        preview = peek.next_batch(config.n_preview)
        del peek
        # the data is readable: now (and only now) clear what geomoe wrote for an earlier run
        check_run_folder(out, overwrite=overwrite)  # again: the folder may have changed since
        remove_run_files(out)
        out.mkdir(parents=True, exist_ok=True)
        # the global RNGs are re-seeded so that the first step is the same with or without
        # the preview read above
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % (2**32))
        _random.seed(config.seed)

    run_info = {
        "kind": RUN_KIND,
        "config": config.to_json(),
        "data": data_info or {},
        "n_items": len(items),
        "items_sha256": digest,
        "data_end": data_end(items),
        "stream_mode": stream.mode,
        "planned_chips": stream.planned,
        "init_from": str(init_from) if init_from else None,
        "device": str(device),
        "precision": "bf16" if use_amp else "fp32",
        "torch": torch.__version__,
    }
    _write_json(out / "run.json", {**run_info, "status": "running", "step": step})

    def checkpoint(loss: float) -> Path:
        st = {
            "step": step,
            "model_size": config.size,
            "config": config.to_json(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "mask_generator": mask_gen.get_state(),
            "rng": capture_rng(),
            "data_position": stream.position,
            "preview": {k: _tensorable(getattr(preview, k)) for k in _PREVIEW},
            "normalisation": norm.to_dict(),
            "items_sha256": digest,
            "elapsed_s": elapsed_before + (time.perf_counter() - t_start),
            "loss": loss,
        }
        save_state(state_path, st)
        save_checkpoint(model, model_path, extra={
            "train_step": step, "train_loss": loss, "data_end": run_info["data_end"],
            "seed": config.seed, "steps": config.steps,
        })
        png = out / "previews" / f"step_{step:07d}.png"
        save_preview(model, preview, png, device, seed=config.seed, title=f"step {step}")
        info = {"step": step, "loss": loss, "state": str(state_path), "model": str(model_path),
                "preview": str(png)}
        if on_checkpoint:
            on_checkpoint(info)
        return png

    t_start = time.perf_counter()
    chips_total, t_train = 0, 0.0
    loss_val = float(state["loss"]) if state is not None else float("nan")
    preview_png: Path | None = None
    stopped = "done"
    model.train()
    with open(metrics_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        if fh.tell() == 0:
            writer.writeheader()
        while step < config.steps:
            t0 = time.perf_counter()
            chips = stream.next_batch(config.batch_size)
            inputs = chips_to_tensors(chips, norm, device)
            ids_keep = random_ids_keep(
                len(chips), model.config.num_patches, config.mask_ratio, mask_gen
            ).to(device)
            t1 = time.perf_counter()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                res = model.forward_mae(
                    inputs["images"], week=inputs["week"], hour=inputs["hour"],
                    lat=inputs["lat"], lon=inputs["lon"], ids_keep=ids_keep,
                    mask_ratio=config.mask_ratio,
                )
            loss = res.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at step {step + 1}: lower --lr or check the input "
                    "chips (z-scoring stats)"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            step += 1
            t2 = time.perf_counter()
            loss_val = float(loss.detach())
            chips_total += len(chips)
            t_train += t2 - t0
            row = {
                "step": step, "epoch": stream.epoch, "loss": loss_val,
                "loss_masked": float(res.loss_masked.detach()),
                "loss_unmasked": float(res.loss_unmasked.detach()),
                "moe_loss": float(res.moe_loss.detach()), "lr": lr_now,
                "grad_norm": float(grad_norm), "chips_per_s": len(chips) / max(t2 - t0, 1e-9),
                "data_s": t1 - t0, "step_s": t2 - t0,
                "elapsed_s": elapsed_before + (t2 - t_start),
            }
            writer.writerow(row)
            fh.flush()
            if on_step:
                on_step(row)
            if step % max(1, config.checkpoint_every) == 0 or step == config.steps:
                preview_png = checkpoint(loss_val)
                say(f"step {step}/{config.steps} loss {loss_val:.4f} "
                    f"({row['chips_per_s']:.0f} chips/s) checkpoint -> {state_path}")
            if step < config.steps:
                if stop_at_step is not None and step >= stop_at_step:
                    stopped = "stop_at_step"
                elif max_seconds is not None and time.perf_counter() - t_start >= max_seconds:
                    stopped = "time_limit"
                if stopped != "done":
                    if step % max(1, config.checkpoint_every) != 0:
                        preview_png = checkpoint(loss_val)
                    say(f"stopped at step {step}/{config.steps} ({stopped}); resume with --resume")
                    break
    if step >= 1 and step >= config.steps and not state_path.exists():
        preview_png = checkpoint(loss_val)  # never at step 0: no untrained weights on disk
    elapsed = elapsed_before + (time.perf_counter() - t_start)
    mean_cps = chips_total / t_train if t_train > 0 else float("nan")
    _write_json(out / "run.json", {
        **run_info, "status": stopped, "step": step, "final_loss": loss_val,
        "mean_chips_per_s": mean_cps, "elapsed_s": elapsed,
        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": str(model_path),
    })
    return TrainResult(
        out=out, step=step, steps=config.steps, stopped=stopped, final_loss=loss_val,
        mean_chips_per_s=mean_cps, elapsed_s=elapsed, model_path=model_path,
        state_path=state_path, metrics_path=metrics_path, preview_path=preview_png,
        data_end=run_info["data_end"], n_items=len(items),
    )


#: Files and folders geomoe writes in a run folder (all that --overwrite may remove).
#: (``metrics.csv.tmp`` and ``.step_*.png.tmp``: temporary names of older versions.)
_RUN_FILES = ("run.json", "metrics.csv", "metrics.csv.tmp", "model.safetensors",
              "state/latest.pt")
_RUN_GLOBS = (".run.json.tmp-*", ".metrics.csv.tmp-*", ".model.safetensors.tmp-*",
              "state/.latest.pt.tmp-*", "previews/step_*.png", "previews/.step_*.png.tmp",
              "previews/.step_*.png.tmp-*", "previews/.latest.png.tmp-*", "previews/latest.png")


def read_run_json(out: Path) -> dict[str, Any] | None:
    """The run.json of `out` if geomoe wrote it (marked, or the layout of older versions)."""
    info = read_json_object(out / "run.json")
    if info is None:
        return None
    if info.get("kind") == RUN_KIND:
        return info
    legacy = {"config", "items_sha256", "status", "step"}  # run folders before RUN_KIND
    return info if legacy <= info.keys() and isinstance(info["config"], dict) else None


def check_run_folder(out: str | Path, *, overwrite: bool = False) -> None:
    """Refuse to start a new run in `out` where it would replace something silently.

    Free: a missing or empty folder, or a geomoe run stopped before its first checkpoint (it
    holds no weights, only run.json and metric rows that a resume would drop anyway). A run with
    weights needs `overwrite`; a non-empty folder geomoe did not make is refused regardless.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a run folder: choose a new --out")
    if not any(out.iterdir()):
        return
    info = read_run_json(out)
    if info is None:
        raise RunFolderError(
            f"--out {out} is not empty and is not a geomoe pretraining run (no geomoe run.json): "
            "geomoe does not write into folders it did not make, even with --overwrite; "
            "choose a new --out"
        )
    trained = (out / "state" / "latest.pt").exists() or (out / "model.safetensors").exists()
    if trained and not overwrite:
        cfg = info.get("config", {})
        raise RunFolderError(
            f"--out {out} already holds a pretraining run (size {cfg.get('size')}, step "
            f"{info.get('step')}/{cfg.get('steps')}, {info.get('status')}): use --resume to "
            "continue it or a new --out, or --overwrite to replace it"
        )


def remove_run_files(out: Path) -> list[Path]:
    """Delete what geomoe wrote for a run in `out` (nothing else); return the paths removed."""
    removed: list[Path] = []
    if not out.is_dir():
        return removed
    paths = [out / f for f in _RUN_FILES] + [p for g in _RUN_GLOBS for p in sorted(out.glob(g))]
    for p in paths:
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(p)
    for sub in ("state", "previews"):
        d = out / sub
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return removed


def _merge_resume_config(
    saved: TrainConfig, given: TrainConfig | None, state_path: Path
) -> TrainConfig:
    """The saved config, with `steps` (and run-time knobs) taken from `given`; others must agree."""
    if given is None:
        return saved
    if given.size != saved.size:
        raise ResumeMismatchError(
            f"{state_path} holds a size-{saved.size} training state, but --size {given.size} was "
            f"asked: resume with --size {saved.size} (or start a new run in another --out)"
        )
    diffs = [k for k in _FROZEN_ON_RESUME if getattr(given, k) != getattr(saved, k)]
    if diffs:
        pairs = ", ".join(f"{k} {getattr(saved, k)!r} -> {getattr(given, k)!r}" for k in diffs)
        raise ResumeMismatchError(
            f"cannot resume {state_path} with changed settings ({pairs}): they change what each "
            "step does; drop them from the command line or start a new run"
        )
    return dataclasses.replace(
        saved, steps=given.steps, checkpoint_every=given.checkpoint_every, device=given.device,
        precision=given.precision, compile=given.compile,
    )


def _param_groups(model: torch.nn.Module) -> tuple[list, list]:
    """AdamW groups: no weight decay on biases, norms, tokens and positional embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "token" in name or "pos_embed" in name or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows after `step` (written after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if int(r["step"]) <= step]
    if len(kept) == len(rows):
        return
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    w.writerows(kept)
    atomic_write(path, buf.getvalue())


def _tensorable(a: np.ndarray) -> Any:
    """numpy -> something torch.load(weights_only=True) accepts (tensors, lists of str)."""
    a = np.asarray(a)
    if a.dtype.kind in "US":
        return [str(x) for x in a]
    if a.dtype.kind == "M":
        return torch.from_numpy(a.astype("datetime64[s]").astype(np.int64))
    if a.dtype == np.uint16:
        return torch.from_numpy(a.astype(np.int32))
    return torch.from_numpy(np.ascontiguousarray(a))


def _np(v: Any) -> np.ndarray:
    if isinstance(v, list):
        return np.asarray(v, dtype=str)
    return v.numpy()


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------------- preview
def unpatchify(patches: torch.Tensor, patch: int, chans: int) -> torch.Tensor:
    """(B, L, C*p*p) patch vectors -> (B, C, H, W) images: the inverse of `MoEMAE.patchify`.

    Layout (the model's `pred`/`target`): patch l = row-major (i, j) on the patch grid; inside a
    patch the values are ordered (band, row, col) like ``F.unfold``.
    """
    b, n, _ = patches.shape
    side = int(round(math.sqrt(n)))
    x = patches.reshape(b, side, side, chans, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, chans, side * patch, side * patch)


@torch.no_grad()
def reconstruct(
    model: torch.nn.Module, chips: ChipBatch, device: torch.device, seed: int = 0,
    mask_ratio: float = 0.75,
) -> dict[str, np.ndarray]:
    """Masked forward in eval mode: input, visible-only input and reconstruction, all z-scored
    (with the model's normalisation).

    Returns arrays (N, 7, 40, 40) float32 `input`, `masked` (NaN where hidden), `recon` (model
    prediction everywhere) and `mask` (N, 100) 1 = hidden.
    """
    was_training = model.training
    model.eval()
    try:
        inputs = chips_to_tensors(chips, model.normalisation, device)
        cfg = model.config
        n = cfg.num_patches
        gen = torch.Generator().manual_seed(seed + 12345)
        ids_keep = random_ids_keep(len(chips), n, mask_ratio, gen).to(device)
        res = model.forward_mae(
            inputs["images"], week=inputs["week"], hour=inputs["hour"], lat=inputs["lat"],
            lon=inputs["lon"], ids_keep=ids_keep, mask_ratio=mask_ratio,
        )
        p, c = cfg.patch_size, cfg.in_chans
        recon = unpatchify(res.pred.float(), p, c)
        mask = res.mask.float()
        side = cfg.img_size // p
        pix_mask = mask.reshape(-1, side, side).repeat_interleave(p, 1).repeat_interleave(p, 2)
        img = inputs["images"].float()
        masked = img.masked_fill(pix_mask[:, None].bool(), float("nan"))
        return {"input": img.cpu().numpy(), "masked": masked.cpu().numpy(),
                "recon": recon.cpu().numpy(), "mask": mask.cpu().numpy()}
    finally:
        model.train(was_training)


def _rgb(z: np.ndarray, mean: np.ndarray, std: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """z-scored (7,H,W) -> (H,W,3) RGB in [0,1] with a fixed stretch (lo/hi per band, on DN)."""
    dn = z * std[:, None, None] + mean[:, None, None]
    rgb = dn[[3, 2, 1]].transpose(1, 2, 0)  # SR_B4, SR_B3, SR_B2
    out = (rgb - lo) / np.maximum(hi - lo, 1e-6)
    return np.clip(out, 0, 1)


#: Smallest DN range a preview stretches to full brightness (about 0.08 reflectance).
MIN_SPAN_DN = 3000.0


def save_preview(
    model: torch.nn.Module, chips: ChipBatch, path: Path, device: torch.device, seed: int = 0,
    title: str = "",
) -> Path:
    """PNG grid, one row per chip: input RGB | masked input (grey = hidden) | reconstruction |
    reconstruction with the visible patches pasted back."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    r = reconstruct(model, chips, device, seed=seed)
    mean = np.asarray(model.normalisation.mean, dtype=np.float32)  # back to DN for the RGB stretch
    std = np.asarray(model.normalisation.std, dtype=np.float32)
    n = r["input"].shape[0]
    fig = Figure(figsize=(8, 2.1 * n + 0.4))
    axes = fig.subplots(n, 4, squeeze=False)
    cols = ("input RGB", "masked input (75 %)", "reconstruction", "recon + visible")
    for i in range(n):
        dn_rgb = r["input"][i][[3, 2, 1]] * std[[3, 2, 1], None, None] + mean[[3, 2, 1], None, None]
        lo = np.percentile(dn_rgb, 2, axis=(1, 2))
        hi = np.percentile(dn_rgb, 98, axis=(1, 2))
        # a near-uniform chip (water, cloud) would stretch sensor noise to full range and make
        # any tiny error look huge: give the stretch at least MIN_SPAN_DN (~0.08 reflectance)
        mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, MIN_SPAN_DN / 2)
        lo, hi = mid - half, mid + half
        vis = np.isnan(r["masked"][i])
        pasted = np.where(vis, r["recon"][i], r["input"][i])
        masked_rgb = _rgb(np.nan_to_num(r["masked"][i]), mean, std, lo, hi)
        masked_rgb[vis[0]] = 0.5
        panels = (
            _rgb(r["input"][i], mean, std, lo, hi), masked_rgb,
            _rgb(r["recon"][i], mean, std, lo, hi), _rgb(pasted, mean, std, lo, hi),
        )
        for j, im in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        hidden = vis[0]
        err = float(np.mean((r["recon"][i][:, hidden] - r["input"][i][:, hidden]) ** 2))
        base = float(np.mean((r["input"][i][:, hidden]
                              - r["input"][i][:, ~hidden].mean(axis=1, keepdims=True)) ** 2))
        axes[i, 0].set_ylabel(f"{str(chips.item_id[i])[-22:]}", fontsize=6)
        axes[i, 2].set_xlabel(f"hidden-pixel MSE {err:.3f} (z)\nvisible-mean baseline {base:.3f}",
                              fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    atomic_write(path.parent / "latest.png", lambda tmp: shutil.copyfile(path, tmp))
    return path
