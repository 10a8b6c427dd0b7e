"""MoEMAE: the metadata-aware Mixture-of-Experts masked autoencoder (arXiv 2509.10919).

Token layout of the encoder: ``[week, hour, lat, lon, CLS, 100 patches row-major]`` = 105
tokens with a learned positional embedding over all of them (CLS is index 4). The decoder
(pretraining only) sees the encoded metadata+CLS tokens (zero position) and the 100 patch
slots (kept patches + mask tokens) with its own positional embedding.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from geomoe.chips.bands import Normalisation
from geomoe.errors import GeomoeError
from geomoe.model import compile as _compile  # one way: compile names MoEMAE for annotations only
from geomoe.model.config import POOLINGS, ModelConfig, config_for
from geomoe.model.layers import MoEBlock, fusable_linear, init_uniform_fan_in


class ModelInputError(GeomoeError, ValueError):
    """Images or metadata passed to the model have the wrong shape or dtype."""


@dataclass
class EncoderOutput:
    """tokens/raw_tokens (B, 105, D) after/before the final LayerNorm; moe_loss scalar."""

    tokens: Tensor
    raw_tokens: Tensor
    moe_loss: Tensor


@dataclass
class MAEOutput:
    """One masked-autoencoder forward pass (all losses scalar tensors, differentiable).

    pred/target (B, 100, 112): per-patch values ordered (band, row, col) like ``F.unfold``;
    mask (B, 100) float, 1 = masked; ids_keep (B, 25); ids_restore (B, 100).
    """

    loss: Tensor
    loss_masked: Tensor
    loss_unmasked: Tensor
    moe_loss: Tensor
    pred: Tensor
    target: Tensor
    mask: Tensor
    ids_keep: Tensor
    ids_restore: Tensor


class MoEMAE(nn.Module):
    """Encoder (+ pretraining decoder) of the MoE-MAE. Build with :func:`build_model`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        d, dd = c.embed_dim, c.decoder_dim
        n_meta = len(c.metadata_order)
        # --- encoder ---
        self.patch_embed = nn.Linear(c.patch_dim, d)  # == Conv2d(k=p, stride=p) on (band,row,col) patches
        self.meta_weight = nn.Parameter(torch.empty(n_meta, d, 2))  # one Linear(2, D) per metadata field
        self.meta_bias = nn.Parameter(torch.empty(n_meta, d))
        init_uniform_fan_in(self.meta_weight, 2)
        init_uniform_fan_in(self.meta_bias, 2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens, d))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        mk = dict(top_k=c.top_k, dropout=c.expert_dropout, w_importance=c.moe_loss_weight_importance,
                  w_load=c.moe_loss_weight_load)
        self.blocks = nn.ModuleList(
            MoEBlock(d, h, e, c.num_heads, c.num_groups, **mk) for h, e in zip(c.expert_hidden, c.experts)
        )
        self.norm = nn.LayerNorm(d)
        # --- decoder (pretraining only) ---
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, c.num_patches, dd))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        self.decoder_blocks = nn.ModuleList(
            MoEBlock(dd, c.decoder_expert_hidden, c.decoder_experts, c.decoder_heads, c.decoder_groups, **mk)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd)
        self.decoder_pred = nn.Linear(dd, c.patch_dim)

    #: eval-mode encode() on CPU processes the batch in chunks of this many chips (0 = whole
    #: batch): activations stay cache-sized (measured ~1.4x at batch 256, 1 thread)
    chunk_size: int = 32
    #: set by :func:`geomoe.model.compile_for_inference` (opt-in); None = eager
    _compiled_encode = None
    _compiled_fp32: bool = False
    _compiled_batch: int | None = None  # the one batch size compiled on non-CPU devices
    #: set by :func:`geomoe.model.compile_for_training` (opt-in); None = eager
    _compiled_mae = None
    _compiled_mae_batch: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def embed_dim(self) -> int:
        """D, the width of tokens and embeddings (144 for S)."""
        return self.config.embed_dim

    @property
    def normalisation(self) -> Normalisation:
        """The z-scoring these weights were trained with (from the checkpoint's config)."""
        return self.config.normalisation

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """Raw DN chips -> the model's image input, z-scored with the weights' own statistics.

        Parameters
        ----------
        pixels : (N, 7, 40, 40) uint16 (or any numeric dtype)
            Landsat C2 L2 DN of SR_B1..SR_B7, e.g. ``ChipBatch.pixels``.

        Returns
        -------
        (N, 7, 40, 40) float32 numpy array, for :meth:`embed` / :meth:`encode` (as a tensor).
        """
        return self.config.normalisation(pixels)

    def num_params(self) -> int:
        """Parameters of encoder + decoder (each shared tensor counted once)."""
        return sum(p.numel() for p in self.parameters())

    def encoder_num_params(self) -> int:
        """Parameters used by :meth:`encode` (everything but the decoder)."""
        dec = ("decoder_", "mask_token")
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(dec))

    # ------------------------------------------------------------------ input handling
    def patchify(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> patches (B, N, C*p*p), patches row-major, values (band, row, col)."""
        c = self.config
        b = images.shape[0]
        g, p = c.grid, c.patch_size
        x = images.reshape(b, c.in_chans, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, c.num_patches, c.patch_dim)

    def _check_images(self, images: Tensor) -> None:
        c = self.config
        want = (c.in_chans, c.img_size, c.img_size)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != want:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ModelInputError(
                f"images must be (B, {want[0]}, {want[1]}, {want[2]}) z-scored float, got {got}; "
                "cut 40x40 chips of the 7 SR bands and z-score them (model.preprocess)"
            )
        if not images.is_floating_point():
            raise ModelInputError(
                f"images have dtype {images.dtype}: the model takes z-scored floats, not raw DN; "
                "apply model.preprocess(pixels) first"
            )

    def _check_meta(self, meta: dict[str, Tensor | None], b: int) -> None:
        for name in self.config.metadata_order:
            m = meta[name]
            if m is not None and (not isinstance(m, Tensor) or tuple(m.shape) != (b, 2)):
                got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ModelInputError(
                    f"{name} must be a (B, 2) = ({b}, 2) tensor of (sin, cos), got {got}; "
                    f"use geomoe.chips.meta.encode_{'latlon' if name in ('lat', 'lon') else name} or pass None"
                )

    def _meta_tokens(self, images: Tensor, meta: dict[str, Tensor | None]) -> Tensor:
        """Metadata (B, 2) each, None = zeros -> tokens (B, 4, D)."""
        b = images.shape[0]
        self._check_meta(meta, b)
        cols = []
        for name in self.config.metadata_order:
            m = meta[name]
            m = images.new_zeros(b, 2) if m is None else m
            cols.append(m.to(device=images.device, dtype=images.dtype))
        meta_in = torch.stack(cols, dim=1)  # (B, 4, 2)
        return torch.einsum("bmi,mdi->bmd", meta_in, self.meta_weight) + self.meta_bias

    def _prefix(self, images: Tensor, meta: dict[str, Tensor | None]) -> Tensor:
        """[metadata tokens, CLS] + their positions: (B, 5, D)."""
        b = images.shape[0]
        cls = self.cls_token.expand(b, -1, -1).to(images.dtype)
        pre = torch.cat([self._meta_tokens(images, meta), cls], dim=1)
        return pre + self.pos_embed[:, : self.config.num_prefix]

    def _run_blocks(self, blocks: nn.ModuleList, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, list[Tensor]]:
        """x (B, T, D) through ``blocks`` -> (x, per-layer routing stats [(2, E_i)])."""
        stats = []
        for blk in blocks:
            x, st = blk(x, generator)
            stats.append(st)
        return x, stats

    @staticmethod
    def _moe_loss(blocks: nn.ModuleList, stats: list[Tensor]) -> Tensor:
        """Sum over layers of the published balancing loss (scalar)."""
        return torch.stack([blk.moe.balance_loss(st) for blk, st in zip(blocks, stats)]).sum()

    # ------------------------------------------------------------------ public API
    def encode(
        self, images: Tensor, week: Tensor | None = None, hour: Tensor | None = None,
        lat: Tensor | None = None, lon: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode full chips.

        images (B, 7, 40, 40) z-scored float; week/hour/lat/lon (B, 2) (sin, cos) or None (= zeros).
        Returns tokens (B, 105, D) after the final LayerNorm, raw_tokens (B, 105, D) before it,
        moe_loss (scalar, sum of the encoder layers' balancing losses).
        In eval mode this runs under ``torch.inference_mode`` (unless ``images`` requires grad)
        and is deterministic; the returned tensors are ordinary tensors usable in autograd.
        """
        self._check_images(images)
        meta = {"week": week, "hour": hour, "lat": lat, "lon": lon}
        self._check_meta(meta, images.shape[0])
        no_graph = not self.training and not images.requires_grad
        fast = no_graph and not torch.is_inference_mode_enabled()
        with torch.inference_mode() if fast else nullcontext():
            cpu_chunks = no_graph and self.chunk_size and images.device.type == "cpu"
            step = self.chunk_size if cpu_chunks else images.shape[0]
            if images.shape[0] <= step:
                parts = [self._encode_eval(images, meta)]
            else:  # chunks keep activations cache-sized; routing is per token, so results are unchanged
                parts = [
                    self._encode_eval(images[i : i + step], {k: None if v is None else v[i : i + step] for k, v in meta.items()})
                    for i in range(0, images.shape[0], step)
                ]
        # Out here, ops on inference tensors give ordinary tensors, which autograd can save (e.g.
        # for a linear probe): the chunks' concatenation is one; a single chunk is copied.
        if len(parts) == 1:
            tokens, raw, stats = parts[0]
            if fast:
                tokens, raw = tokens.clone(), raw.clone()
        else:
            tokens, raw = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            stats = [torch.stack(layer).sum(0) for layer in zip(*(p[2] for p in parts))]
        return EncoderOutput(tokens, raw, self._moe_loss(self.blocks, stats))

    def _encode_eval(self, images: Tensor, meta: dict[str, Tensor | None]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One eval chunk: the compiled graph when enabled (and, on CPU, the chunk is full), else eager."""
        if self._compiled_encode is None:
            return self._encode(images, meta, None)
        if _compile.use_compiled(self, images):
            return _compile.run_compiled(self, images, meta)
        return self._encode(images, meta, None)

    def _encode(self, images: Tensor, meta: dict[str, Tensor | None], generator: torch.Generator | None
                ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """-> (tokens, raw tokens, per-layer routing stats)."""
        patches = fusable_linear(self.patchify(images), self.patch_embed) + self.pos_embed[:, self.config.num_prefix :]
        x = torch.cat([self._prefix(images, meta), patches], dim=1)
        raw, stats = self._run_blocks(self.blocks, x, generator)
        return self.norm(raw), raw, stats

    def embed(
        self, images: Tensor, week: Tensor | None = None, hour: Tensor | None = None,
        lat: Tensor | None = None, lon: Tensor | None = None, pooling: str = "mean",
    ) -> Tensor:
        """One vector per chip: (B, D) float32.

        pooling "mean": mean of all 105 raw (pre-LayerNorm) tokens, the vector the published
        linear probes used; "cls": the normed CLS token (index 4); "patch_mean": mean of the
        100 normed patch tokens.
        """
        if pooling not in POOLINGS:
            raise ModelInputError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        out = self.encode(images, week, hour, lat, lon)
        if pooling == "mean":
            v = out.raw_tokens.mean(dim=1)
        elif pooling == "cls":
            v = out.tokens[:, self.config.cls_index]
        else:
            v = out.tokens[:, self.config.num_prefix :].mean(dim=1)
        return v.float()

    def forward(self, images: Tensor, week: Tensor | None = None, hour: Tensor | None = None,
                lat: Tensor | None = None, lon: Tensor | None = None) -> EncoderOutput:
        """Same as :meth:`encode` (so ``model(images)`` works)."""
        return self.encode(images, week, hour, lat, lon)

    def forward_mae(
        self, images: Tensor, week: Tensor | None = None, hour: Tensor | None = None,
        lat: Tensor | None = None, lon: Tensor | None = None, *, ids_keep: Tensor | None = None,
        mask_ratio: float | None = None, generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """Masked-autoencoder pass (pretraining); differentiable.

        images (B, 7, 40, 40) z-scored; metadata (B, 2) or None. ``ids_keep`` (B, K) int64 patch
        indices to keep (makes a step reproducible); otherwise K = int(100 * (1 - mask_ratio))
        patches are drawn per sample from ``generator`` (also used for routing noise in training).
        loss = masked SSE per masked patch + 0.1 * unmasked SSE per unmasked patch + 0.5 * moe_loss.
        After :func:`geomoe.model.compile_for_training`, training-mode calls without a
        ``generator`` run the pass after these checks (:meth:`_mae`) compiled.
        """
        self._check_images(images)
        c = self.config
        meta = {"week": week, "hour": hour, "lat": lat, "lon": lon}
        b, n, dev = images.shape[0], c.num_patches, images.device
        if ids_keep is None:
            ratio = c.mask_ratio if mask_ratio is None else mask_ratio
            keep = int(n * (1 - ratio))
            if not 0 < keep <= n:
                raise ModelInputError(f"mask_ratio {ratio} keeps {keep} of {n} patches; use 0 <= ratio < 1")
            noise = torch.rand(b, n, generator=generator, device=dev if generator is None else generator.device)
            ids_keep = torch.argsort(noise.to(dev), dim=1)[:, :keep].contiguous()  # one layout: no recompiles
        else:
            ids_keep = self._check_ids_keep(ids_keep, b, n).to(dev)
        if generator is None and self._compiled_mae is not None:
            if _compile.use_compiled_mae(self, images):
                return MAEOutput(*_compile.run_compiled_mae(self, images, meta, ids_keep))
        return MAEOutput(*self._mae(images, meta, ids_keep, generator))

    def _mae(self, images: Tensor, meta: dict[str, Tensor | None], ids_keep: Tensor,
             generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """The pass of :meth:`forward_mae` after its checks: MAEOutput's fields, in order."""
        c = self.config
        b, n, dev = images.shape[0], c.num_patches, images.device
        keep = ids_keep.shape[1]
        kept_mask = torch.zeros(b, n, dtype=torch.bool, device=dev).scatter_(1, ids_keep, True)
        rest = torch.argsort(kept_mask.to(torch.int8), dim=1, stable=True)[:, : n - keep]  # masked, ascending
        ids_restore = torch.argsort(torch.cat([ids_keep, rest], dim=1), dim=1)
        mask = (~kept_mask).to(torch.float32)

        target = self.patchify(images)
        d = c.embed_dim
        emb = self.patch_embed(target) + self.pos_embed[:, c.num_prefix :]
        kept = torch.gather(emb, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([self._prefix(images, meta), kept], dim=1)
        encoded, stats = self._run_blocks(self.blocks, x, generator)
        moe_loss = self._moe_loss(self.blocks, stats)
        encoded = self.norm(encoded)

        dec = self.decoder_embed(encoded)  # (B, 5 + K, Dd)
        dd, pre = c.decoder_dim, c.num_prefix
        slots = torch.cat([dec[:, pre:], self.mask_token.to(dec.dtype).expand(b, n - keep, -1)], dim=1)
        slots = torch.gather(slots, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd)) + self.decoder_pos_embed
        y = torch.cat([dec[:, :pre], slots], dim=1)
        y, _ = self._run_blocks(self.decoder_blocks, y, generator)  # decoder balancing loss unused (published)
        pred = self.decoder_pred(self.decoder_norm(y)[:, pre:])

        diff = pred.float() - target.float()
        err = (diff * diff).sum(-1)  # (B, N); bit-identical to .pow(2), whose backward runs a generic pow
        n_masked, n_unmasked = mask.sum(), (1 - mask).sum()
        loss_masked = (err * mask).sum() / n_masked.clamp_min(1)
        loss_unmasked = (err * (1 - mask)).sum() / n_unmasked.clamp_min(1)
        loss = loss_masked + c.loss_alpha_unmasked * loss_unmasked + c.loss_beta_moe * moe_loss
        return loss, loss_masked, loss_unmasked, moe_loss, pred, target, mask, ids_keep, ids_restore

    @staticmethod
    def _check_ids_keep(ids_keep: Tensor, b: int, n: int) -> Tensor:
        ok = (
            isinstance(ids_keep, Tensor) and ids_keep.ndim == 2 and ids_keep.shape[0] == b
            and 0 < ids_keep.shape[1] <= n and not ids_keep.is_floating_point()
        )
        if ok:
            ids_keep = ids_keep.long()
            ok = bool(((ids_keep >= 0) & (ids_keep < n)).all()) and bool(
                (torch.sort(ids_keep, dim=1).values.diff(dim=1) != 0).all()
            )
        if not ok:
            raise ModelInputError(
                f"ids_keep must be a (B={b}, K) integer tensor of distinct patch indices in [0, {n}); "
                "pass the ids_keep of a previous MAEOutput or leave it None"
            )
        return ids_keep


def build_model(size: str = "S", **overrides) -> MoEMAE:
    """A freshly initialised MoEMAE of a published size ("S", "XS", "XXS"); img 40, patch 4, 7 bands.

    ``overrides`` replace ModelConfig fields (e.g. ``img_size=36, patch_size=3``).
    """
    return MoEMAE(config_for(size, **overrides))
