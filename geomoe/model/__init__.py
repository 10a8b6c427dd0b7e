"""The MoE-MAE model: build, encode, embed, pretrain forward, and safe checkpoint I/O.

>>> from geomoe.model import build_model, load_checkpoint
>>> model = build_model("S")                 # img 40, patch 4, 7 bands
>>> images = torch.from_numpy(model.preprocess(batch.pixels))  # DN -> z-scored with the weights' statistics
>>> out = model.encode(images)               # images (B, 7, 40, 40) float32
>>> out.tokens.shape                         # (B, 105, 144)

Names load on first use (PEP 562), so ``geomoe.model.config`` (sizes, pooling names) imports
without torch: the CLI builds its options from it and ``geomoe --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule of geomoe.model that defines it
_EXPORTS: dict[str, str] = {
    "checkpoint_sha256": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "save_published": "checkpoint",
    "compile_for_inference": "compile", "compile_for_training": "compile", "uncompile": "compile",
    "METADATA_ORDER": "config", "POOLINGS": "config", "SIZES": "config", "ModelConfig": "config",
    "config_for": "config",
    "EncoderOutput": "mae", "MAEOutput": "mae", "ModelInputError": "mae", "MoEMAE": "mae",
    "build_model": "mae",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geomoe.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"geomoe.model.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
