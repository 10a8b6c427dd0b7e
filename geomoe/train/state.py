"""Training state on disk: atomic writes and exact RNG capture, so `--resume` continues bit-for-bit.

The state is a dict of plain tensors, numbers, strings, lists and dicts written with `torch.save`,
so it loads with `torch.load(..., weights_only=True)`: a resumed run never unpickles code.
A save goes through geomoe.atomic.atomic_write: a kill at any moment leaves either the old
complete file or the new complete file under the final name, never a torn one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geomoe.atomic import atomic_write
from geomoe.errors import CheckpointError

#: Version of the training-state layout below; bumped when keys change meaning.
STATE_FORMAT = 1


class ResumeMismatchError(CheckpointError):
    """A training state cannot continue this run (other model size, other settings)."""


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise a training-state dict with torch.save and write it atomically to `path`."""
    buf = io.BytesIO()
    torch.save({"format": STATE_FORMAT, **state}, buf)
    atomic_write(path, buf.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a training state safely (weights_only=True); a torn or foreign file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no training state at {path}: start without --resume, or point --out at the run "
            "folder that holds state/latest.pt"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, refused globals
        raise CheckpointError(
            f"training state {path} cannot be read safely ({type(exc).__name__}: {exc}); "
            "it is not a geomoe training state or it is corrupt: restart without --resume"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path} is not a geomoe training state (format {STATE_FORMAT} expected)"
        )
    return state


def capture_rng() -> dict[str, Any]:
    """Every global RNG a training step may draw from, as weights_only-loadable values."""
    np_state = np.random.get_state(legacy=False)
    out: dict[str, Any] = {
        "python": _py_state_to_plain(random.getstate()),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # pragma: no cover - no GPU here
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    random.setstate(_py_state_from_plain(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # pragma: no cover - no GPU here
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(st: tuple) -> list:
    version, internal, gauss = st
    return [int(version), torch.tensor(internal, dtype=torch.int64), gauss]


def _py_state_from_plain(st: list) -> tuple:
    version, internal, gauss = st
    return (int(version), tuple(int(v) for v in internal.tolist()), gauss)
