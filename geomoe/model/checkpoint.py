"""Safe checkpoint I/O: geomoe's safetensors format and the published ``.pth`` format.

* geomoe format: a safetensors file of the fused state dict, with the ModelConfig (JSON) and
  caller-supplied ``extra`` (JSON) in its metadata; written atomically (geomoe.atomic).
* published format: ``torch.save({"model_state": ..., "epoch": ..., ...})`` of the reference
  code (or a bare state dict); read with ``torch.load(weights_only=True)`` so pickled code is
  refused, never executed; keys/shapes are checked and mapped onto the fused layout.
Every failure is a :class:`~geomoe.errors.CheckpointError` saying what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import struct
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from geomoe.atomic import atomic_write
from geomoe.errors import CheckpointError
from geomoe.model.config import SIZES, ModelConfig, config_for
from geomoe.model.layout import internal_to_published, published_to_internal
from geomoe.model.mae import MoEMAE

FORMAT_NAME = "geomoe.moemae"
FORMAT_VERSION = "1"
_MAX_LISTED = 12


# ------------------------------------------------------------------ shapes and size detection
@lru_cache(maxsize=None)
def _shapes(cfg: ModelConfig, published: bool) -> dict[str, tuple[int, ...]]:
    """Every key -> shape for ``cfg`` in either layout (built on the meta device: no memory)."""
    with torch.device("meta"):
        sd = MoEMAE(cfg).state_dict()
    if published:
        sd = internal_to_published(sd, cfg)
    return {k: tuple(v.shape) for k, v in sd.items()}


def _closest_size(sd: dict[str, Tensor], published: bool, base: ModelConfig | None = None) -> tuple[ModelConfig, int]:
    """The published size whose key/shape table matches ``sd`` best: (config, matching keys)."""
    best: tuple[ModelConfig, int] | None = None
    for size in SIZES:
        cfg = config_for(size) if base is None else _with_size(base, size)
        shapes = _shapes(cfg, published)
        score = sum(1 for k, v in sd.items() if shapes.get(k) == tuple(v.shape))
        if best is None or score > best[1]:
            best = (cfg, score)
    assert best is not None
    return best


def _with_size(base: ModelConfig, size: str) -> ModelConfig:
    ref = config_for(size)
    keep = {k: v for k, v in base.to_dict().items()}
    for k in ("size", "embed_dim", "depth", "expert_hidden_first", "expert_hidden_last", "num_heads", "num_groups"):
        keep[k] = getattr(ref, k)
    return ModelConfig.from_dict(keep)


def _check_keys(sd: dict[str, Tensor], cfg: ModelConfig, published: bool, path: Path) -> None:
    """Raise CheckpointError listing missing / unexpected / wrong-shape keys."""
    want = _shapes(cfg, published)
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [(k, tuple(sd[k].shape), want[k]) for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if not (missing or unexpected or wrong):
        return
    if not set(sd) & set(want):
        raise CheckpointError(
            f"{path} holds tensors {sorted(sd)[:_MAX_LISTED]}, none of which belong to an MoE-MAE: "
            "not an MoE-MAE checkpoint; pass the published pretrained_*.pth or a geomoe .safetensors file"
        )
    layout = "published MoE-MAE" if published else "geomoe"
    look, score = _closest_size(sd, published)
    looks = f"it looks most like size {look.size} ({score}/{len(sd)} keys match that size's shapes)"
    if wrong:
        lines = [f"  {k}: file {got}, model {exp}" for k, got, exp in wrong[:_MAX_LISTED]]
        more = f"\n  ... and {len(wrong) - _MAX_LISTED} more" if len(wrong) > _MAX_LISTED else ""
        raise CheckpointError(
            f"{path}: {len(wrong)} tensors have the wrong shape for a size-{cfg.size} {layout} model "
            f"(img {cfg.img_size}, patch {cfg.patch_size}, {cfg.in_chans} bands):\n" + "\n".join(lines) + more
            + f"\n{looks}. Use a checkpoint of the matching size/geometry, or build that size"
        )
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} keys missing for a size-{cfg.size} {layout} model, e.g. "
            f"{missing[:_MAX_LISTED]}; the file is incomplete or from another model ({looks}). "
            "Use the full checkpoint (with encoder and decoder weights)"
        )
    raise CheckpointError(
        f"{path}: {len(unexpected)} unexpected keys for a size-{cfg.size} {layout} model, e.g. "
        f"{unexpected[:_MAX_LISTED]}; this is not an MoE-MAE checkpoint geomoe knows ({looks})"
    )


# ------------------------------------------------------------------ format sniffing
#: torch.save's legacy (non-zip) format: pickle protocol 2, then its magic number as a long.
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"
_PICKLE_ADVICE = (
    "a pickle can run code when it is loaded, and geomoe never runs code from a checkpoint. If you "
    "trust the file, load it yourself and re-save only its tensors (torch.save({'model_state': sd}, "
    "...) or geomoe.model.save_checkpoint), then pass that file")


def _sniff(path: Path) -> str:
    """'torch-zip', 'torch-pickle', 'safetensors', or raise CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (or run `geomoe pretrain`)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file inside it")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(16)
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the download or save was interrupted; "
                              "copy or save it again")
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head.startswith(_TORCH_LEGACY_HEAD):
        return "torch-pickle"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        # pickle.dump of a dict (torch's weights-only reader cannot parse it, and says so in
        # opcodes): refused like a torch pickle holding code, never unpickled
        raise CheckpointError(
            f"refusing to load {path}: it is a plain Python pickle (pickle.dump, protocol {head[1]}) of "
            f"pickled Python objects/code, not a torch or safetensors checkpoint; {_PICKLE_ADVICE}")
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{":
            if 8 + n > size:
                raise CheckpointError(
                    f"checkpoint {path} is truncated: its safetensors header says {n} header bytes but the "
                    f"file has {size} bytes; copy or save it again"
                )
            return "safetensors"
    raise CheckpointError(
        f"{path} is not a model checkpoint (neither a safetensors file nor a torch .pth); "
        "pass a geomoe .safetensors checkpoint or the published pretrained_*.pth"
    )


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "weights only" in msg.lower() or "weights_only" in msg:
            found = re.search(r"GLOBAL [\w.]+", msg) or re.search(r"Unsupported [^.]*", msg)
            why = f"it references {found.group(0)}" if found else "it is not a plain tensor pickle"
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled Python objects/code, not just tensors "
                f"({why}); {_PICKLE_ADVICE}") from None
        raise CheckpointError(f"{path} is corrupt or truncated ({msg}); copy or save it again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, struct.error, KeyError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); copy or save it again") from None


def _safetensors_load(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise CheckpointError(f"{path} is a corrupt or truncated safetensors file ({exc}); copy or save it again") from None
    return sd, meta


# ------------------------------------------------------------------ public API
def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MoEMAE:
    """Load a geomoe (.safetensors) or published (.pth) MoE-MAE checkpoint.

    Returns the model in ``eval()`` mode on ``map_location`` (deterministic routing).
    ``model.checkpoint_extra`` holds the saved ``extra`` dict (published: epoch, best_train_loss).
    Raises CheckpointError for unsafe, corrupt, truncated or mismatching files.
    """
    path = Path(path)
    kind = _sniff(path)
    extra: dict[str, Any] = {}
    if kind == "safetensors":
        sd, meta = _safetensors_load(path)
        if meta.get("format") == FORMAT_NAME:
            try:
                cfg = ModelConfig.from_dict(json.loads(meta["config"]))
                extra = json.loads(meta.get("extra", "{}"))
            except (KeyError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"{path}: geomoe metadata is damaged ({exc}); re-save the checkpoint") from None
            published = False
        else:
            published = any(k.startswith("encoder.") for k in sd)
            cfg, _ = _closest_size(sd, published)
    else:
        obj = _torch_load(path)
        if isinstance(obj, dict) and isinstance(obj.get("model_state"), dict):
            sd = obj["model_state"]
            extra = {k: obj[k] for k in ("epoch", "best_train_loss") if isinstance(obj.get(k), (int, float))}
        elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            sd = obj
        else:
            what = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(
                f"{path} holds {what}, not an MoE-MAE checkpoint (expected a dict with 'model_state' or a "
                "state dict); pass the pretrained_*.pth of geo-moe-mae or a geomoe .safetensors file"
            )
        if not all(isinstance(v, Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: model_state holds non-tensor values; this is not a model state dict")
        published = any(k.startswith("encoder.") for k in sd)
        cfg, _ = _closest_size(sd, published)
    _check_keys(sd, cfg, published, path)
    if published:
        sd = published_to_internal(sd, cfg)
    model = MoEMAE(cfg)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    model.checkpoint_extra = extra
    return model.to(map_location).eval()


def save_checkpoint(model: MoEMAE, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Write ``model`` as a geomoe safetensors checkpoint (config + weights), atomically.

    ``extra`` must be JSON-serialisable (e.g. training step, data hash); it comes back as
    ``load_checkpoint(path).checkpoint_extra``. Returns the path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    try:
        extra_json = json.dumps(extra or {}, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"extra must be JSON-serialisable ({exc}); convert values to str/int/float/list/dict") from None
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "extra": extra_json,
    }
    # safetensors creates 0600; atomic_write gives the file the umask's mode, like open()
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_published(model: MoEMAE, path: str | os.PathLike, **fields: Any) -> Path:
    """Write ``model`` in the published ``.pth`` layout ({"model_state": ..., **fields}), atomically."""
    path = Path(path)
    sd = internal_to_published({k: v.detach().cpu() for k, v in model.state_dict().items()}, model.config)
    return atomic_write(path, lambda tmp: torch.save({"model_state": sd, **fields}, tmp))


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the checkpoint file's bytes (to record which weights made an output)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ the default checkpoint
#: The demo checkpoint geomoe ships (made by `geomoe pretrain`, see checkpoints/README.md),
#: relative to the working directory or to the source checkout.
DEMO_CHECKPOINT = Path("checkpoints") / "geomoe-demo-S.safetensors"
def default_checkpoint() -> Path | None:
    """The demo checkpoint: ``./checkpoints/...`` first, then the one shipped with the package;
    None if neither exists. The one rule embed-region, probe and retraining use when given none."""
    from geomoe import resources

    for candidate in (Path.cwd() / DEMO_CHECKPOINT, resources.demo_checkpoint()):
        if candidate.is_file():
            return candidate
    return None


def resolve_checkpoint(checkpoint: str | os.PathLike | None, *, alternative: str = "") -> Path:
    """The checkpoint to use, never silently random weights: `checkpoint` if it is a file,
    :func:`default_checkpoint` when None; else a CheckpointError that names the file and the fix
    (`alternative`, e.g. "or --random-init ...", is appended to the fix)."""
    if checkpoint is not None and str(checkpoint) != "":
        p = Path(checkpoint).expanduser()
        if not p.is_file():
            raise CheckpointError(
                f"checkpoint {p} not found: pass an existing file to --checkpoint{alternative}")
        return p
    p = default_checkpoint()
    if p is None:
        raise CheckpointError(
            f"no checkpoint given and the demo checkpoint {DEMO_CHECKPOINT} does not exist; "
            "create it with `geomoe pretrain` (see checkpoints/README.md) or pass "
            f"--checkpoint PATH (e.g. the published pretrained_S_best.pth){alternative}")
    return p
