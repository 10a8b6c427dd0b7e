"""Model configuration: the published MoE-MAE sizes and everything a checkpoint must record.

The config travels inside geomoe checkpoints (JSON in the safetensors metadata), so a file
always says which architecture, input geometry, band order and normalisation it expects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from geomoe.chips.bands import BANDS, PUBLISHED, Normalisation
from geomoe.errors import CheckpointError

#: How an embedding pools the encoder's tokens (see MoEMAE.embed); the one list the CLI, the
#: embed request and the probe check against.
POOLINGS: tuple[str, ...] = ("mean", "cls", "patch_mean")

#: Order of the metadata tokens in the sequence (indices 0..3); CLS is index 4.
METADATA_ORDER: tuple[str, ...] = ("week", "hour", "lat", "lon")

#: Published sizes: (embed_dim, depth, first expert hidden, last expert hidden, heads, groups).
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "S": (144, 15, 144, 72, 8, 4),
    "XS": (128, 12, 96, 32, 8, 4),
    "XXS": (108, 9, 81, 27, 6, 3),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture + input contract of one MoE-MAE.

    ``asdict(config)`` is JSON-able; :meth:`from_dict` reverses it (lists back to tuples).
    """

    size: str = "S"
    img_size: int = 40
    patch_size: int = 4
    in_chans: int = 7
    embed_dim: int = 144
    depth: int = 15
    expert_hidden_first: int = 144
    expert_hidden_last: int = 72
    num_heads: int = 8
    num_groups: int = 4
    experts_per_stage: tuple[int, int, int] = (3, 4, 5)
    top_k: int = 2
    expert_dropout: float = 0.1
    moe_loss_weight_importance: float = 0.01
    moe_loss_weight_load: float = 0.01
    decoder_dim: int = 108
    decoder_depth: int = 2
    decoder_expert_hidden: int = 54
    decoder_experts: int = 3
    decoder_heads: int = 6
    decoder_groups: int = 3
    mask_ratio: float = 0.75
    loss_alpha_unmasked: float = 0.1
    loss_beta_moe: float = 0.5
    bands: tuple[str, ...] = field(default_factory=lambda: tuple(BANDS))
    # the DN statistics the weights were trained with; a config without them (published .pth,
    # older files) gets the published ones
    norm_mean: tuple[float, ...] = PUBLISHED.mean
    norm_std: tuple[float, ...] = PUBLISHED.std
    metadata_order: tuple[str, ...] = METADATA_ORDER

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads or self.num_heads % self.num_groups:
            raise ValueError("embed_dim must divide by num_heads and num_heads by num_groups")
        if len(self.bands) != self.in_chans:
            raise ValueError(f"{len(self.bands)} band names for in_chans={self.in_chans}")
        if len(self.norm_mean) != self.in_chans or len(self.norm_std) != self.in_chans:
            raise ValueError(f"norm_mean/norm_std need {self.in_chans} values each (one per band), "
                             f"got {len(self.norm_mean)}/{len(self.norm_std)}")
        self.normalisation  # noqa: B018 - raises ValueError for a zero, negative or NaN std

    @property
    def normalisation(self) -> Normalisation:
        """The z-scoring these weights expect (from ``norm_mean``/``norm_std``)."""
        return Normalisation(self.norm_mean, self.norm_std)

    # ---- derived geometry -------------------------------------------------------------
    @property
    def grid(self) -> int:
        """Patches per side (10 at img 40 / patch 4)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_prefix(self) -> int:
        """Metadata tokens + CLS (5): the tokens before the patches."""
        return len(self.metadata_order) + 1

    @property
    def cls_index(self) -> int:
        return len(self.metadata_order)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    @property
    def patch_dim(self) -> int:
        """Values per patch in MAE targets, ordered (channel, row, col) like ``F.unfold``."""
        return self.in_chans * self.patch_size * self.patch_size

    @property
    def expert_hidden(self) -> list[int]:
        """Per-layer expert hidden width, shrinking linearly from first to last (published rule)."""
        d, a, b = self.depth, self.expert_hidden_first, self.expert_hidden_last
        if d == 1:
            return [a]
        return [int((d - 1 - i) / (d - 1) * (a - b)) + b for i in range(d)]

    @property
    def experts(self) -> list[int]:
        """Experts per layer: three stages of depth//3 layers (the last stage takes the rest)."""
        stage = max(self.depth // 3, 1)
        return [self.experts_per_stage[min(i // stage, 2)] for i in range(self.depth)]

    # ---- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(
                f"checkpoint config has unknown fields {unknown}: it was written by a newer geomoe; "
                "upgrade geomoe to load it"
            )
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint config is invalid ({exc}); re-save it with save_checkpoint") from exc


def config_for(size: str, **overrides: Any) -> ModelConfig:
    """The published configuration of ``size`` ("S", "XS", "XXS"), with optional overrides."""
    key = size.upper() if isinstance(size, str) else size
    if key not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    d, depth, first, last, heads, groups = SIZES[key]
    published = dict(
        size=key, embed_dim=d, depth=depth, expert_hidden_first=first, expert_hidden_last=last,
        num_heads=heads, num_groups=groups,
    )
    return ModelConfig(**{**published, **overrides})
