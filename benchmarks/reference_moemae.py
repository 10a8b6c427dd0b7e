"""Reference-style MoE-MAE: the BASELINE for benchmarks/bench_model.py and a test oracle.

Written for geomoe as a plain re-statement of how the published geo-moe-mae code computes
(MIT, arXiv 2509.10919): a Python loop over experts with ``index_add_``, K/V materialised with
``repeat``, hand-written softmax attention, a noisy top-k gate. Its ``state_dict()`` has the
published key layout (``encoder.layers.{i}.moe.experts.{e}.{W,V,W2}`` with V/W2 one shared
module per layer, ``patch_embed`` = ``encoder.patch_proj``), so the published checkpoint
loads into it with ``load_state_dict`` and it can write published-format files for any size.

``gate_noise``: "always" (published behaviour: noise in eval too), "train" or "never" (what
the fixtures in ../shared/data/reference-checkpoint were recorded with). Not used by geomoe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIZES = {  # embed, depth, first hidden, last hidden, heads, groups
    "S": (144, 15, 144, 72, 8, 4),
    "XS": (128, 12, 96, 32, 8, 4),
    "XXS": (108, 9, 81, 27, 6, 3),
}


class RefExpert(nn.Module):
    """SwiGLU expert W2(silu(W x) * V x); V and W2 are passed in (shared by a layer's experts)."""

    def __init__(self, dim: int, hidden: int, V: nn.Linear, W2: nn.Linear, dropout: float) -> None:
        super().__init__()
        self.W = nn.Linear(dim, hidden)
        self.V = V
        self.W2 = W2
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.W2(F.silu(self.W(x)) * self.V(x)))


class RefGate(nn.Module):
    def __init__(self, dim: int, experts: int, k: int, noise: str) -> None:
        super().__init__()
        self.Wg = nn.Linear(dim, experts)
        self.Wnoise = nn.Linear(dim, experts)
        self.k, self.noise = k, noise

    def forward(self, x: Tensor):
        clean = self.Wg(x)
        scale = F.softplus(self.Wnoise(x))
        use_noise = self.noise == "always" or (self.noise == "train" and self.training)
        h = clean + torch.randn_like(clean) * scale if use_noise else clean
        top_v, top_i = torch.topk(h, self.k, dim=-1)
        gates = torch.zeros_like(h).scatter(-1, top_i, F.softmax(top_v, dim=-1))
        return gates, h, top_i, scale, clean


class RefMoE(nn.Module):
    def __init__(self, dim: int, hidden: int, experts: int, k: int, noise: str, dropout: float) -> None:
        super().__init__()
        V, W2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.experts = nn.ModuleList(RefExpert(dim, hidden, V, W2, dropout) for _ in range(experts))
        self.gate = RefGate(dim, experts, k, noise)
        self.k = k

    @staticmethod
    def _cv(v: Tensor) -> Tensor:
        return v.std(unbiased=False) / (v.mean() + 1e-6)

    def forward(self, x: Tensor):
        b, n, d = x.shape
        flat = x.reshape(b * n, d)
        gates, h, top_i, scale, clean = self.gate(flat)
        loss_imp = 0.01 * self._cv(gates.sum(0))
        kv, _ = torch.topk(h, self.k + 1, dim=1)
        lk = kv[:, self.k - 1 : self.k].repeat(1, h.shape[1])
        lk1 = kv[:, self.k : self.k + 1].repeat(1, h.shape[1])
        psi = torch.where(h > lk, lk, torch.where(h <= lk1, lk1, h))
        normal = torch.distributions.Normal(torch.zeros_like(clean), torch.ones_like(clean))
        loss_load = 0.01 * self._cv(normal.cdf((clean - psi) / scale).sum(0))
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows = torch.where((top_i == e).any(dim=1))[0]
            if rows.numel() == 0:
                continue
            out.index_add_(0, rows, expert(flat[rows]) * gates[rows, e].unsqueeze(-1))
        return out.reshape(b, n, d), loss_imp + loss_load


class RefGQA(nn.Module):
    def __init__(self, dim: int, heads: int, groups: int) -> None:
        super().__init__()
        self.h, self.g, self.hd = heads, groups, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, groups * self.hd)
        self.v_proj = nn.Linear(dim, groups * self.hd)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q = self.q_proj(x).view(b, n, self.h, self.hd).permute(0, 2, 1, 3)
        # head h uses group h mod G: repeat (not repeat_interleave) the groups
        k = self.k_proj(x).view(b, n, 1, self.g, self.hd).repeat(1, 1, self.h // self.g, 1, 1).view(b, n, self.h, self.hd)
        v = self.v_proj(x).view(b, n, 1, self.g, self.hd).repeat(1, 1, self.h // self.g, 1, 1).view(b, n, self.h, self.hd)
        att = (q @ k.permute(0, 2, 3, 1)) * self.hd**-0.5
        att = att.softmax(dim=-1)
        o = (att @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.out_proj(o)


class RefLayer(nn.Module):
    def __init__(self, dim, hidden, experts, heads, groups, noise, dropout=0.1, k=2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RefGQA(dim, heads, groups)
        self.norm2 = nn.LayerNorm(dim)
        self.moe = RefMoE(dim, hidden, experts, k, noise, dropout)

    def forward(self, x: Tensor):
        x = x + self.attn(self.norm1(x))
        y, loss = self.moe(self.norm2(x))
        return x + y, loss


class RefEncoder(nn.Module):
    def __init__(self, size: str, img=40, patch=4, chans=7, noise="never") -> None:
        super().__init__()
        d, depth, first, last, heads, groups = SIZES[size]
        self.embed_dim, self.patch_size, self.in_chans = d, patch, chans
        self.num_patches = (img // patch) ** 2
        self.patch_proj = nn.Conv2d(chans, d, patch, patch)
        self.week_proj, self.hour_proj = nn.Linear(2, d), nn.Linear(2, d)
        self.lat_proj, self.lon_proj = nn.Linear(2, d), nn.Linear(2, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 5, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        hidden = [int((depth - 1 - i) / (depth - 1) * (first - last)) + last for i in range(depth)]
        experts = [(3, 4, 5)[min(i // (depth // 3), 2)] for i in range(depth)]
        self.layers = nn.ModuleList(RefLayer(d, h, e, heads, groups, noise) for h, e in zip(hidden, experts))
        self.norm = nn.LayerNorm(d)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def meta_cls(self, b: int, ref: Tensor, week, hour, lat, lon) -> Tensor:
        z = lambda m: torch.zeros(b, 2, device=ref.device) if m is None else m  # noqa: E731
        toks = [self.week_proj(z(week)), self.hour_proj(z(hour)), self.lat_proj(z(lat)), self.lon_proj(z(lon))]
        return torch.cat([torch.stack(toks, 1), self.cls_token.expand(b, -1, -1)], 1)

    def run(self, x: Tensor):
        total = x.new_zeros(1).sum()
        for layer in self.layers:
            x, loss = layer(x)
            total = total + loss
        return x, total

    def forward(self, images, week=None, hour=None, lat=None, lon=None):
        """-> (normed tokens, moe loss, raw tokens), as the published encoder returns them."""
        b = images.shape[0]
        p = self.patch_proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.meta_cls(b, images, week, hour, lat, lon), p], 1) + self.pos_embed
        raw, loss = self.run(x)
        return self.norm(raw), loss, raw


class RefMoEMAE(nn.Module):
    """Encoder + 2-layer decoder, published key layout."""

    def __init__(self, size: str = "S", noise: str = "never", img=40, patch=4, chans=7) -> None:
        super().__init__()
        self.encoder = RefEncoder(size, img, patch, chans, noise)
        self.patch_embed = self.encoder.patch_proj
        d, dd = self.encoder.embed_dim, 108
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.encoder.num_patches, dd))
        self.decoder_layers = nn.ModuleList(RefLayer(dd, dd // 2, 3, 6, 3, noise) for _ in range(2))
        self.decoder_norm = nn.LayerNorm(dd)
        self.decoder_pred = nn.Linear(dd, patch * patch * chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    def forward(self, images, week=None, hour=None, lat=None, lon=None, ids_keep=None, mask_ratio=0.75):
        """-> (pred (B,N,P), mask (B,N), ids_restore (B,N), moe loss), as the published MOEMAE."""
        enc = self.encoder
        p = self.patch_embed(images).flatten(2).transpose(1, 2)
        b, n, d = p.shape
        if ids_keep is None:
            shuffle = torch.argsort(torch.rand(b, n, device=images.device), dim=1)
            ids_keep = shuffle[:, : int(n * (1 - mask_ratio))]
        else:
            keep = torch.zeros(b, n, dtype=torch.bool, device=images.device).scatter(1, ids_keep, True)
            shuffle = torch.cat([ids_keep, torch.argsort(keep.int(), dim=1, stable=True)[:, : n - ids_keep.shape[1]]], 1)
        ids_restore = torch.argsort(shuffle, dim=1)
        mask = torch.ones(b, n, device=images.device).scatter(1, ids_keep, 0.0)
        idx = ids_keep.unsqueeze(-1).repeat(1, 1, d)
        kept = torch.gather(p, 1, idx) + torch.gather(enc.pos_embed[:, 5:].expand(b, -1, -1), 1, idx)
        x = torch.cat([enc.meta_cls(b, images, week, hour, lat, lon) + enc.pos_embed[:, :5], kept], 1)
        x, moe_loss = enc.run(x)
        x = self.decoder_embed(enc.norm(x))
        slots = torch.cat([x[:, 5:], self.mask_token.repeat(b, n - x.shape[1] + 5, 1)], 1)
        slots = torch.gather(slots, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[-1]))
        y = torch.cat([x[:, :5], slots + self.decoder_pos_embed], 1)
        for layer in self.decoder_layers:
            y, _ = layer(y)
        pred = self.decoder_pred(self.decoder_norm(y)[:, 5:])
        return pred, mask, ids_restore, moe_loss


def mae_loss(model: RefMoEMAE, images: Tensor, pred: Tensor, mask: Tensor, moe_loss: Tensor) -> Tensor:
    """Published pretraining loss: masked SSE/patch + 0.1 unmasked SSE/patch + 0.5 moe."""
    target = F.unfold(images, kernel_size=model.encoder.patch_size, stride=model.encoder.patch_size).transpose(1, 2)
    err = (pred - target) ** 2
    lm = (err * mask.unsqueeze(-1)).sum() / mask.sum()
    lu = (err * (1 - mask).unsqueeze(-1)).sum() / (1 - mask).sum()
    return lm + 0.1 * lu + 0.5 * moe_loss
