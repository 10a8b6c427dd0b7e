"""Transformer building blocks of the MoE-MAE: grouped-query attention and the SwiGLU MoE.

Both are numerically the published blocks, re-laid-out for speed:

* GQA: one fused q/k/v projection and ``F.scaled_dot_product_attention`` (explicit matmul
  attention in cache-sized batch pieces on CPU under bf16). K/V are never repeated: the
  published model gives head ``h`` the K/V group ``h mod G``, so the ``H/G`` heads that share
  a group are stacked along the query axis of that group instead.
* MoE: the experts share ``V`` and ``W2`` (published design), so the top-2 mixture can be
  taken *before* ``W2``: ``sum_k g_k (W2 h_k + b) = W2 (sum_k g_k h_k) + b`` with
  ``h_k = silu(W_k x) * V x``. One fused matmul gives every expert's ``W x`` and ``V x``; no
  Python loop over experts, ``V x`` and ``W2`` are computed once per token instead of twice.
  Pretraining's dense mixing has a hand-written backward (:class:`_GatedSwiGLU`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _cv(x: Tensor) -> Tensor:
    """Coefficient of variation (population std / mean), as the published balancing loss."""
    return x.std(unbiased=False) / (x.mean() + 1e-6)


def _fast_dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout for CPU tensors from 16-bit uniform draws, four per 64-bit draw.

    torch's CPU bernoulli_ draws one number per element from one mt19937 stream, a noticeable
    share of a bf16 pretraining step; this draws a quarter as many from the same global
    generator (reproducible under torch.manual_seed), about three times faster. The drop
    probability is ``p`` rounded to a multiple of 1/65536 (0.1 -> 0.1000061); kept values are
    scaled by 1 / (1 - that), so the expectation is exact. Compiled graphs keep the same
    elements as eager (:func:`random_int16`).
    """
    if p <= 0:
        return x
    drop = round(p * 65536)
    keep = random_int16(x.detach(), x.numel()).view(x.shape) >= drop - 32768
    return x * (keep.to(x.dtype) * (65536 / (65536 - drop)))


@torch.library.custom_op("geomoe::random_int16", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def random_int16(like: Tensor, n: int) -> Tensor:
    """``n`` uniform int16 on ``like``'s device, four per int64 from the global generator: (n,).

    An op of its own so that a compiled graph draws exactly eager's numbers (dynamo cannot
    trace the in-place ``random_``, and inductor would use its own generator). ``like`` is
    read only for its device; as an input it keeps AOTAutograd's CSE from merging two draws
    of the same size into one.
    """
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)
    return bits.view(torch.int16)[:n]


@random_int16.register_fake
def _random_int16_fake(like: Tensor, n: int) -> Tensor:
    return like.new_empty(n, dtype=torch.int16)


def _top_k(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """torch.topk(h, k, dim=-1) (values descending) for the few experts of a layer.

    Eager on CPU this is torch.topk. On GPUs and in compiled graphs, k rounds of max: torch.topk
    over 3-5 columns costs a sort kernel per layer (a visible share of a bf16 GPU encode) and is an
    opaque call to inductor; k maxes are cheap and fuse with their neighbours.
    """
    if h.device.type == "cpu" and not torch.compiler.is_compiling():
        return torch.topk(h, k, dim=-1)
    return _top_k_by_max(h, k)


def _top_k_by_max(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    vals, idx, rest = [], [], h
    for _ in range(k):
        v, i = rest.max(dim=-1, keepdim=True)
        vals.append(v)
        idx.append(i)
        rest = rest.scatter(-1, i, float("-inf"))
    return torch.cat(vals, dim=-1), torch.cat(idx, dim=-1)


def fusable_linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)``; in a compiled CPU graph as a matmul plus a separate bias add.

    Why: ATen's CPU addmm first copies the bias into every output row and then accumulates
    the GEMM onto it, one more write and read of the output; a plain matmul's bias add fuses
    into the kernel that consumes the output anyway (silu mix, residual or position add).
    Under autocast the bias is added in float32 to the bf16 product. The compiled bf16 encode
    gets a little faster and no less accurate (benchmarks/README.md, "Model internals"). Not
    for the q/k/v projection, whose output goes to the attention matmuls in bf16 and would be
    rounded twice (measurably further from the fp32 tokens).
    Eager keeps addmm, where the separate add would be one more pass.
    """
    if x.device.type == "cpu" and torch.compiler.is_compiling() and layer.bias is not None:
        return torch.matmul(x, layer.weight.t()) + layer.bias
    return layer(x)


def _autocast_bf16(x: Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type) == torch.bfloat16


class GroupedQueryAttention(nn.Module):
    """Multi-head self-attention with ``groups`` shared K/V heads; head h reads group h mod G.

    Parameters: ``qkv`` (D + 2*G*d, D) = [q; k; v] rows, ``proj`` (D, D), all with bias.
    """

    def __init__(self, dim: int, heads: int, groups: int) -> None:
        super().__init__()
        if dim % heads or heads % groups:
            raise ValueError("dim must divide by heads and heads by groups")
        self.dim, self.heads, self.groups = dim, heads, groups
        self.head_dim = dim // heads
        self.kv_dim = groups * self.head_dim
        self.qkv = nn.Linear(dim, dim + 2 * self.kv_dim)
        self.proj = nn.Linear(dim, dim)

    #: "sdpa": ``F.scaled_dot_product_attention`` (on CPU always in float32: at head size 18 the
    #: CPU flash kernel is slower in bf16); "matmul": explicit softmax(q k^T) v, in batch pieces
    #: of at most :attr:`scores_budget` score elements so the scores stay cache-sized;
    #: "auto" (default): see :meth:`resolved_impl`.
    impl: str = "auto"
    #: most attention-score elements (B*H*N*N) one "matmul" piece materialises (~23 chips at N=105)
    scores_budget: int = 2_000_000

    def resolved_impl(self, x: Tensor) -> str:
        """``impl``, with "auto" resolved for input ``x``: "sdpa" or "matmul".

        Matmul on CPU under bf16 autocast, SDPA otherwise: at head size 18 under bf16 the
        matmul form beat float32 SDPA for eval chunks and, by more, for the pretraining
        forward and backward; in float32 SDPA wins (benchmarks/README.md, "Model internals").
        """
        if self.impl != "auto":
            return self.impl
        return "matmul" if x.device.type == "cpu" and _autocast_bf16(x) else "sdpa"

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, D) -> (B, N, D)."""
        b, n, _ = x.shape
        g, r, d = self.groups, self.heads // self.groups, self.head_dim
        qkv = self.qkv(x)
        q, k, v = qkv.split([self.dim, self.kv_dim, self.kv_dim], dim=-1)
        # head h = r_idx * G + g_idx  (so h mod G = g_idx): view heads as (R, G)
        q = q.reshape(b, n, r, g, d).permute(0, 3, 2, 1, 4).reshape(b, g, r * n, d)
        k = k.reshape(b, n, g, d).transpose(1, 2)  # (B, G, N, d), a view
        v = v.reshape(b, n, g, d).transpose(1, 2)
        impl = self.resolved_impl(x)
        if impl == "matmul":
            o = _matmul_attention(q, k, v, self.scores_budget)
        elif x.device.type == "cpu" and q.dtype != torch.float32:
            with torch.autocast("cpu", enabled=False):
                o = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        else:
            o = F.scaled_dot_product_attention(q, k, v)  # (B, G, R*N, d)
        o = o.reshape(b, g, r, n, d).permute(0, 3, 2, 1, 4).reshape(b, n, self.dim)
        return fusable_linear(o, self.proj)


def _matmul_attention(q: Tensor, k: Tensor, v: Tensor, max_scores: int) -> Tensor:
    """softmax(q k^T / sqrt(d)) v, computed transposed; q (B, G, M, d), k/v (B, G, N, d) -> (B, G, M, d).

    The scores are formed as ``k q^T`` (keys x queries) and softmaxed over the keys axis, and
    the output as ``(v^T p^T)^T``. Why: a compiled softmax then reduces over the outer axis,
    16 queries per vector, instead of along 105-long rows (horizontal reductions, masked
    tails), and the second matmul writes 105/210-long output rows instead of 18-wide ones.
    Same values up to bf16 rounding. A few percent faster than the row-wise form, compiled
    and eager, for inference and the compiled pretraining step; the eager pretraining step is
    on par (benchmarks/README.md, "Model internals").
    Along this axis ATen's bf16 softmax (float math inside) was as fast as or faster than a
    float32 softmax plus a cast, also for the encoder's 30 keys in pretraining.

    Without an autograd graph (inference) the normalisation is deferred past the second
    matmul: ``v`` gets a row of ones, so that matmul gives each query's numerators and its
    sum of exps together, and the division happens on the (d, M) output instead of the
    (N, M) probabilities. Why: a compiled softmax over the outer axis runs as four passes
    with a float32 buffer of all exps between them (the scores of a piece are L2-sized, that
    buffer is not); deferred, there are two passes over bf16 data, which speeds up the compiled
    bf16 encode by about a tenth (eager on par). Cost: the numerators and the sum are each
    rounded to bf16 by the matmul, so the attention output and the encoder's tokens move
    slightly further from float64 / fp32; the mean-pooled embeddings do not (figures:
    benchmarks/README.md, "Model internals"). Training keeps the normalised softmax: its
    backward is cheaper eager (the deferred form was slower there).
    Runs over even batch pieces of at most ``max_scores`` score elements: attention is per
    chip, and cache-sized scores keep the softmax and its backward fast (a 4M-element decoder
    piece ran its softmax backward many times slower per element than a 1M-element one).
    """
    b, per_chip = q.shape[0], q.shape[1] * q.shape[2] * k.shape[2]
    pieces = max(1, -(-b * per_chip // max_scores))
    step = max(1, -(-b // pieces))
    deferred = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
    v_t = v.transpose(-1, -2)  # (B, G, d, N)
    if deferred:
        v_t = torch.cat([v_t, v.new_ones(*v.shape[:2], 1, v.shape[2])], dim=-2)  # (B, G, d+1, N)
    outs = []
    for i in range(0, max(b, 1), step):
        scores_t = torch.matmul(k[i : i + step], (q[i : i + step] * q.shape[-1] ** -0.5).transpose(-1, -2))
        if deferred:
            exps_t = (scores_t - scores_t.amax(dim=-2, keepdim=True)).exp().to(v.dtype)
            o = torch.matmul(v_t[i : i + step], exps_t)  # (b, G, d+1, M): numerators, then the sums
            outs.append((o[:, :, :-1] / o[:, :, -1:]).transpose(-1, -2))
        else:
            probs_t = scores_t.softmax(dim=-2).to(v.dtype)
            outs.append(torch.matmul(v_t[i : i + step], probs_t).transpose(-1, -2))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class MoEFeedForward(nn.Module):
    """Noisy top-k gated mixture of SwiGLU experts with shared ``V`` and ``W2``.

    Parameters: ``gate`` (2E, D) = [Wg; Wnoise]; ``w_in`` ((E+1)*h, D) = [W_0; ...; W_{E-1}; V];
    ``w_out`` (D, h) = W2. Routing noise ``N(0,1) * softplus(Wnoise x)`` is added only in
    training mode; in eval the top-k of the clean logits ``Wg x`` is used (deterministic).
    """

    def __init__(
        self, dim: int, hidden: int, experts: int, top_k: int = 2, dropout: float = 0.1,
        w_importance: float = 0.01, w_load: float = 0.01,
    ) -> None:
        super().__init__()
        if experts <= top_k:
            raise ValueError(f"need more experts ({experts}) than top_k ({top_k})")
        self.dim, self.hidden, self.experts, self.top_k = dim, hidden, experts, top_k
        self.w_importance, self.w_load = w_importance, w_load
        self.gate = nn.Linear(dim, 2 * experts)
        self.w_in = nn.Linear(dim, (experts + 1) * hidden)
        self.w_out = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def route(self, flat: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Gate tokens. flat (T, D) -> (gates (T, E) dense, zero off the top-k; idx (T, k); stats (2, E)).

        stats = [importance, load] summed over the tokens (additive over chunks of a batch);
        :meth:`balance_loss` turns them into the published balancing loss.

        Computed in float32 even under autocast, so routing does not flip with precision.
        """
        e, k = self.experts, self.top_k
        with torch.autocast(flat.device.type, enabled=False):
            both = F.linear(flat.float(), self.gate.weight.float(), self.gate.bias.float())
            logits, noise_logits = both.split([e, e], dim=-1)
            noise_scale = F.softplus(noise_logits)
            if self.training:
                noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
                h = logits + noise * noise_scale
            else:
                h = logits
            vals, idx = _top_k(h, k + 1)
            weights = torch.softmax(vals[:, :k], dim=-1)
            gates = torch.zeros_like(h).scatter_(1, idx[:, :k], weights)
            # Balancing loss (Shazeer et al.), exactly as the published layer computes it.
            importance = gates.sum(0)
            l_k, l_k1 = vals[:, k - 1 : k], vals[:, k : k + 1]
            psi = torch.where(h > l_k, l_k, torch.where(h <= l_k1, l_k1, h))
            load = torch.special.ndtr((logits - psi) / noise_scale).sum(0)
        return gates, idx[:, :k], torch.stack([importance, load])

    def balance_loss(self, stats: Tensor) -> Tensor:
        """stats (2, E) = [importance, load] -> w_imp * CV(importance) + w_load * CV(load) (scalar)."""
        return self.w_importance * _cv(stats[0]) + self.w_load * _cv(stats[1])

    #: "sparse": tokens sorted by expert, ``W_e x`` only for the routed (token, expert) pairs
    #: (one matmul per expert, 4 h D MACs per token); "dense": every expert's ``W x`` in one
    #: matmul mixed by the zero-off-top-k gates ((E+2) h D MACs, no host sync, static shapes);
    #: "auto" (default): see :meth:`resolved_impl`.
    impl: str = "auto"

    def resolved_impl(self, x: Tensor) -> str:
        """``impl``, with "auto" resolved for input ``x``: "sparse" or "dense".

        Dense on GPUs (no host sync, faster in bf16 eval) and for a CPU autograd graph under
        bf16 autocast (the sparse gathers and scatters are slow in bf16). Sparse otherwise on
        CPU (a little faster in fp32 eval, on par in bf16). Figures: benchmarks/README.md.
        """
        if self.impl != "auto":
            return self.impl
        if x.device.type != "cpu":
            return "dense"
        graph = torch.is_grad_enabled() and x.requires_grad
        return "dense" if graph and _autocast_bf16(x) else "sparse"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """x (B, N, D) -> (y (B, N, D), routing stats (2, E), see :meth:`route`)."""
        b, n, dim = x.shape
        flat = x.reshape(b * n, dim)
        gates, idx, stats = self.route(flat, generator)
        e, hid = self.experts, self.hidden
        if self.resolved_impl(x) == "sparse":
            w, bias = self.w_in.weight, self.w_in.bias
            v = F.linear(flat, w[e * hid :], bias[e * hid :])
            mixed = self._sparse_mix(flat, gates, idx, w, bias)
            y = self.w_out(mixed.to(v.dtype) * v)
        else:
            y = fusable_linear(self._dense_swiglu(flat, gates, idx), self.w_out)
        y = _fast_dropout(y, self.dropout.p) if self.training and y.device.type == "cpu" else self.dropout(y)
        return y.view(b, n, dim), stats

    def _dense_swiglu(self, flat: Tensor, gates: Tensor, idx: Tensor) -> Tensor:
        """(sum_e g_e silu(W_e x)) * V x with every expert's ``W_e x`` computed: (T, h)."""
        e, hid = self.experts, self.hidden
        w, bias = self.w_in.weight, self.w_in.bias
        if torch.is_grad_enabled() and any(t.requires_grad for t in (flat, w, gates)):
            # two matmuls: contiguous W x and V x for the hand-written backward
            aw = F.linear(flat, w[: e * hid], bias[: e * hid])
            v = F.linear(flat, w[e * hid :], bias[e * hid :])
            return _GatedSwiGLU.apply(aw, v, gates.to(aw.dtype))
        a = fusable_linear(flat, self.w_in)  # (T, (E+1)*h): one matmul
        if flat.device.type == "cpu":  # silu of the top-k slices only (not measured on GPUs)
            return _mix_top_k(a[:, : e * hid], idx, gates.gather(1, idx).to(a.dtype), e) * a[:, e * hid :]
        return _mix_experts(a[:, : e * hid], gates.to(a.dtype)) * a[:, e * hid :]

    def _sparse_mix(self, flat: Tensor, gates: Tensor, idx: Tensor, w: Tensor, bias: Tensor) -> Tensor:
        """sum over the top-k experts of g_e * silu(W_e x), computing W_e x only where routed: (T, h)."""
        e, hid, k = self.experts, self.hidden, self.top_k
        flat_e = idx.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        tok = torch.div(order, k, rounding_mode="floor")
        counts = torch.bincount(flat_e, minlength=e).tolist()
        xs = flat.index_select(0, tok)
        gs = gates.gather(1, idx).reshape(-1).index_select(0, order)
        parts, start = [], 0
        for j, c in enumerate(counts):
            if c:
                parts.append(F.linear(xs[start : start + c], w[j * hid : (j + 1) * hid], bias[j * hid : (j + 1) * hid]))
            start += c
        if not parts:  # no tokens at all (empty batch)
            return flat.new_zeros(flat.shape[0], hid)
        hs = F.silu(torch.cat(parts)) * gs.unsqueeze(1).to(parts[0].dtype)
        return torch.zeros(flat.shape[0], hid, dtype=hs.dtype, device=flat.device).index_add_(0, tok, hs)


def _mix_experts(aw: Tensor, g: Tensor) -> Tensor:
    """sum_e g_e silu(W_e x): aw = [W_0 x, ..., W_{E-1} x] (T, E*h), g (T, E) -> (T, h).

    Written pointwise over the (static) experts: one fused kernel under torch.compile; a
    (T,1,E) x (T,E,h) bmm ran as slow batched GEMVs on the GPU.
    """
    return _weighted_sum(g, F.silu(aw).view(aw.shape[0], g.shape[1], -1))


def _mix_top_k(aw: Tensor, idx: Tensor, w: Tensor, experts: int) -> Tensor:
    """sum_j w_j silu(W_{idx_j} x) over the top-k: aw (T, E*h), idx/w (T, k) -> (T, h).

    The same sum as :func:`_mix_experts` with the zero-off-top-k gates, but takes the silu of
    k slices per token instead of E. Not bit-equal to it: eager silu can differ in the last bit
    (ATen's per-thread tails run scalar code), and in the compiled bf16 graph the fused kernels
    round differently (size S, 64 chips: relative L2 to the fp32 tokens 0.0111 vs 0.0114 with E).
    """
    t, k = idx.shape
    sel = aw.view(t, experts, -1).gather(1, idx.unsqueeze(-1).expand(t, k, aw.shape[1] // experts))
    return _weighted_sum(w, F.silu(sel))


def _weighted_sum(w: Tensor, hw: Tensor) -> Tensor:
    """sum_j w_j hw_j, added in order of j: w (T, J), hw (T, J, h) -> (T, h)."""
    mixed = w[:, :1] * hw[:, 0]
    for j in range(1, w.shape[1]):
        mixed = mixed + w[:, j : j + 1] * hw[:, j]
    return mixed


class _GatedSwiGLU(torch.autograd.Function):
    """``_mix_experts(aw, g) * v`` with a hand-written backward: aw (T, E*h), v (T, h), g (T, E).

    Autograd's backward of the sliced forward zero-fills a full-size gradient for each of the
    2E slices and sums them; this writes each gradient once (a faster bf16 pretraining step on
    CPU; benchmarks/README.md).
    """

    @staticmethod
    def forward(ctx, aw: Tensor, v: Tensor, g: Tensor) -> Tensor:
        mixed = _mix_experts(aw, g)
        ctx.save_for_backward(aw, v, g, mixed)
        return mixed * v

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        aw, v, g, mixed = ctx.saved_tensors
        t, e = g.shape
        aw3 = aw.view(t, e, -1)
        grad_mixed = (grad * v).unsqueeze(1)  # (T, 1, h)
        grad_aw = torch.ops.aten.silu_backward(g.unsqueeze(-1) * grad_mixed, aw3).view(t, -1)
        grad_g = (F.silu(aw3) * grad_mixed).sum(-1)  # (T, E)
        return grad_aw, grad * mixed, grad_g


class MoEBlock(nn.Module):
    """Pre-norm encoder layer: ``x + GQA(LN(x))`` then ``x + MoE(LN(x))``."""

    def __init__(
        self, dim: int, hidden: int, experts: int, heads: int, groups: int, top_k: int = 2,
        dropout: float = 0.1, w_importance: float = 0.01, w_load: float = 0.01,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GroupedQueryAttention(dim, heads, groups)
        self.norm2 = nn.LayerNorm(dim)
        self.moe = MoEFeedForward(dim, hidden, experts, top_k, dropout, w_importance, w_load)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """x (B, N, D) -> (x (B, N, D), MoE routing stats (2, E))."""
        x = x + self.attn(self.norm1(x))
        y, stats = self.moe(self.norm2(x), generator)
        return x + y, stats


def init_uniform_fan_in(t: Tensor, fan_in: int) -> None:
    """nn.Linear's default bias/weight init range (1/sqrt(fan_in)) for hand-made parameters."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(t, -bound, bound)
