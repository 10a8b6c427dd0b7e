"""Mapping between geomoe's fused parameter layout and the published MoE-MAE state dict.

Published (``MOEMAE.state_dict()`` of the reference code):
``encoder.layers.{i}.attn.{q,k,v,out}_proj``, ``encoder.layers.{i}.moe.experts.{e}.{W,V,W2}``
(``V``/``W2`` repeated under every expert: one shared tensor), ``moe.gate.{Wg,Wnoise}``,
``encoder.{week,hour,lat,lon}_proj``, ``encoder.patch_proj`` (Conv2d) duplicated as
``patch_embed``, ``decoder_layers.{i}....``.
geomoe: ``blocks.{i}.attn.qkv`` = [q; k; v], ``blocks.{i}.moe.w_in`` = [W_0..W_{E-1}; V],
``moe.gate`` = [Wg; Wnoise], ``moe.w_out`` = W2, ``patch_embed`` as a Linear over
(band, row, col) patch values, ``meta_weight`` (4, D, 2) / ``meta_bias`` (4, D).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geomoe.errors import CheckpointError
from geomoe.model.config import ModelConfig

_WB = ("weight", "bias")


def _block_to_internal(sd: dict[str, Tensor], pub: str, out: str, experts: int, res: dict[str, Tensor]) -> None:
    for n in ("norm1", "norm2"):
        for s in _WB:
            res[f"{out}.{n}.{s}"] = sd[f"{pub}.{n}.{s}"]
    for s in _WB:
        res[f"{out}.attn.qkv.{s}"] = torch.cat([sd[f"{pub}.attn.{p}_proj.{s}"] for p in "qkv"])
        res[f"{out}.attn.proj.{s}"] = sd[f"{pub}.attn.out_proj.{s}"]
        res[f"{out}.moe.gate.{s}"] = torch.cat([sd[f"{pub}.moe.gate.Wg.{s}"], sd[f"{pub}.moe.gate.Wnoise.{s}"]])
        for shared in ("V", "W2"):
            first = sd[f"{pub}.moe.experts.0.{shared}.{s}"]
            for e in range(1, experts):
                other = sd[f"{pub}.moe.experts.{e}.{shared}.{s}"]
                if other.shape != first.shape or not torch.equal(other, first):
                    raise CheckpointError(
                        f"{pub}.moe.experts.{e}.{shared}.{s} differs from expert 0's: the MoE-MAE shares "
                        f"{shared} across the experts of a layer, so this is not a checkpoint of that model "
                        "(or it was edited); use the original file"
                    )
        ws = [sd[f"{pub}.moe.experts.{e}.W.{s}"] for e in range(experts)]
        res[f"{out}.moe.w_in.{s}"] = torch.cat(ws + [sd[f"{pub}.moe.experts.0.V.{s}"]])
        res[f"{out}.moe.w_out.{s}"] = sd[f"{pub}.moe.experts.0.W2.{s}"]


def _block_to_published(sd: dict[str, Tensor], src: str, pub: str, cfg_dim: int, heads: int, groups: int,
                        hidden: int, experts: int, res: dict[str, Tensor]) -> None:
    kv = groups * (cfg_dim // heads)
    for n in ("norm1", "norm2"):
        for s in _WB:
            res[f"{pub}.{n}.{s}"] = sd[f"{src}.{n}.{s}"]
    for s in _WB:
        q, k, v = sd[f"{src}.attn.qkv.{s}"].split([cfg_dim, kv, kv])
        res[f"{pub}.attn.q_proj.{s}"], res[f"{pub}.attn.k_proj.{s}"], res[f"{pub}.attn.v_proj.{s}"] = q, k, v
        res[f"{pub}.attn.out_proj.{s}"] = sd[f"{src}.attn.proj.{s}"]
        wg, wn = sd[f"{src}.moe.gate.{s}"].split([experts, experts])
        parts = sd[f"{src}.moe.w_in.{s}"].split([hidden] * (experts + 1))
        for e in range(experts):
            res[f"{pub}.moe.experts.{e}.W.{s}"] = parts[e]
            res[f"{pub}.moe.experts.{e}.V.{s}"] = parts[experts]
            res[f"{pub}.moe.experts.{e}.W2.{s}"] = sd[f"{src}.moe.w_out.{s}"]
        res[f"{pub}.moe.gate.Wg.{s}"], res[f"{pub}.moe.gate.Wnoise.{s}"] = wg, wn


def published_to_internal(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Published state dict -> geomoe state dict (keys must already be checked to exist)."""
    res: dict[str, Tensor] = {}
    for s in _WB:
        a, b = sd[f"encoder.patch_proj.{s}"], sd.get(f"patch_embed.{s}")
        if b is not None and (a.shape != b.shape or not torch.equal(a, b)):
            raise CheckpointError(
                f"patch_embed.{s} differs from encoder.patch_proj.{s}; in the published model they are one "
                "tensor, so the file was edited or is not an MoE-MAE checkpoint"
            )
        res[f"patch_embed.{s}"] = a.reshape(cfg.embed_dim, -1) if s == "weight" else a
    res["meta_weight"] = torch.stack([sd[f"encoder.{m}_proj.weight"] for m in cfg.metadata_order])
    res["meta_bias"] = torch.stack([sd[f"encoder.{m}_proj.bias"] for m in cfg.metadata_order])
    res["cls_token"] = sd["encoder.cls_token"]
    res["pos_embed"] = sd["encoder.pos_embed"]
    for i, e in enumerate(cfg.experts):
        _block_to_internal(sd, f"encoder.layers.{i}", f"blocks.{i}", e, res)
    for s in _WB:
        res[f"norm.{s}"] = sd[f"encoder.norm.{s}"]
        res[f"decoder_embed.{s}"] = sd[f"decoder_embed.{s}"]
        res[f"decoder_norm.{s}"] = sd[f"decoder_norm.{s}"]
        res[f"decoder_pred.{s}"] = sd[f"decoder_pred.{s}"]
    res["mask_token"] = sd["mask_token"]
    res["decoder_pos_embed"] = sd["decoder_pos_embed"]
    for i in range(cfg.decoder_depth):
        _block_to_internal(sd, f"decoder_layers.{i}", f"decoder_blocks.{i}", cfg.decoder_experts, res)
    return res


def internal_to_published(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """geomoe state dict -> the published key layout (shared V/W2 repeated per expert)."""
    c = cfg
    res: dict[str, Tensor] = {
        "mask_token": sd["mask_token"],
        "decoder_pos_embed": sd["decoder_pos_embed"],
        "encoder.pos_embed": sd["pos_embed"],
        "encoder.cls_token": sd["cls_token"],
    }
    conv_w = sd["patch_embed.weight"].reshape(c.embed_dim, c.in_chans, c.patch_size, c.patch_size)
    res["encoder.patch_proj.weight"], res["encoder.patch_proj.bias"] = conv_w, sd["patch_embed.bias"]
    for j, m in enumerate(c.metadata_order):
        res[f"encoder.{m}_proj.weight"] = sd["meta_weight"][j]
        res[f"encoder.{m}_proj.bias"] = sd["meta_bias"][j]
    for i, (h, e) in enumerate(zip(c.expert_hidden, c.experts)):
        _block_to_published(sd, f"blocks.{i}", f"encoder.layers.{i}", c.embed_dim, c.num_heads, c.num_groups, h, e, res)
    for s in _WB:
        res[f"encoder.norm.{s}"] = sd[f"norm.{s}"]
    res["patch_embed.weight"], res["patch_embed.bias"] = conv_w, sd["patch_embed.bias"]
    for s in _WB:
        res[f"decoder_embed.{s}"] = sd[f"decoder_embed.{s}"]
    for i in range(c.decoder_depth):
        _block_to_published(sd, f"decoder_blocks.{i}", f"decoder_layers.{i}", c.decoder_dim, c.decoder_heads,
                            c.decoder_groups, c.decoder_expert_hidden, c.decoder_experts, res)
    for s in _WB:
        res[f"decoder_norm.{s}"] = sd[f"decoder_norm.{s}"]
        res[f"decoder_pred.{s}"] = sd[f"decoder_pred.{s}"]
    return res
