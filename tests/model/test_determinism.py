"""Eval is deterministic (routing on clean logits); noise and dropout only in train()."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geomoe.model import ModelInputError, build_model


def test_repeated_encode_is_bit_identical(ref_model_S, ref_io, ref_meta):
    a = ref_model_S.encode(ref_io["images"], **ref_meta)
    b = ref_model_S.encode(ref_io["images"], **ref_meta)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.raw_tokens, b.raw_tokens)
    # batch composition does not change a chip's routing (no batch-level noise)
    one = ref_model_S.encode(ref_io["images"][:1], **{k: v[:1] for k, v in ref_meta.items()})
    assert (one.tokens[0] - a.tokens[0]).abs().max() < 1e-4


def test_published_behaviour_was_noisy_ours_is_not(ref_dir, ref_io, ref_meta, reference, ref_model_S):
    noisy = reference.RefMoEMAE("S", noise="always").eval()
    noisy.load_state_dict(torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)["model_state"])
    with torch.no_grad():
        c1 = noisy.encoder(ref_io["images"], **ref_meta)[0][:, 4]
        c2 = noisy.encoder(ref_io["images"], **ref_meta)[0][:, 4]
    assert not torch.equal(c1, c2)  # the published gate adds noise in eval too
    e1 = ref_model_S.embed(ref_io["images"], **ref_meta, pooling="cls")
    assert torch.equal(e1, ref_model_S.embed(ref_io["images"], **ref_meta, pooling="cls"))


def test_noise_only_in_train(ref_io):
    torch.manual_seed(0)
    model = build_model("XXS")
    x = ref_io["images"]
    ids = torch.arange(25).expand(8, 25)
    model.train()
    r1 = model.forward_mae(x, ids_keep=ids)
    r2 = model.forward_mae(x, ids_keep=ids)
    assert not torch.equal(r1.pred, r2.pred)  # routing noise + expert dropout
    torch.manual_seed(3)
    r3 = model.forward_mae(x, ids_keep=ids, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    r4 = model.forward_mae(x, ids_keep=ids, generator=torch.Generator().manual_seed(1))
    assert torch.equal(r3.pred, r4.pred)  # seeded training step is reproducible
    model.eval()
    e1, e2 = model.forward_mae(x, ids_keep=ids), model.forward_mae(x, ids_keep=ids)
    assert torch.equal(e1.pred, e2.pred) and torch.equal(e1.loss, e2.loss)


def test_training_step_reaches_every_parameter(ref_io):
    torch.manual_seed(0)
    model = build_model("XXS").train()
    r = model.forward_mae(ref_io["images"], generator=torch.Generator().manual_seed(0))
    assert r.ids_keep.shape == (8, 25) and r.mask.sum() == 8 * 75 and r.ids_restore.shape == (8, 100)
    r.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    g = torch.Generator().manual_seed(5)
    m1 = model.forward_mae(ref_io["images"], generator=g).ids_keep
    assert not torch.equal(m1, model.forward_mae(ref_io["images"], generator=g).ids_keep)


@pytest.mark.parametrize("batch", [8, 40])  # one chunk (copied out) and two (concatenated)
def test_eval_outputs_feed_autograd(ref_model_S, ref_io, batch):
    """encode() uses inference_mode in eval, but its outputs still work in a trainable probe."""
    x = ref_io["images"].repeat(5, 1, 1, 1)[:batch]
    assert (batch > ref_model_S.chunk_size) == (batch == 40)  # the two cases above
    out = ref_model_S.encode(x)
    w = torch.zeros(144, requires_grad=True)
    for t in (out.tokens, out.raw_tokens):  # mul saves t for backward: refused for inference tensors
        assert not t.is_inference()
        (t * w).sum().backward()
    assert w.grad is not None and not out.tokens.requires_grad
    emb = ref_model_S.embed(x)
    (emb @ torch.zeros(144, 19, requires_grad=True)).sum().backward()


def test_bf16_autocast_is_close(ref_model_S, ref_io, ref_meta):
    ref = ref_model_S.embed(ref_io["images"], **ref_meta)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = ref_model_S.embed(ref_io["images"], **ref_meta)
    assert low.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(low, ref, dim=1)
    assert cos.min() > 0.99


def test_bad_inputs_have_clear_errors(ref_model_S, ref_io):
    x = ref_io["images"]
    with pytest.raises(ModelInputError, match=r"\(B, 7, 40, 40\)"):
        ref_model_S.encode(x[:, :6])
    with pytest.raises(ModelInputError, match=r"model\.preprocess"):
        ref_model_S.encode(x.to(torch.int32))
    with pytest.raises(ModelInputError, match=r"week must be a \(B, 2\)"):
        ref_model_S.encode(x, week=torch.zeros(8, 3))
    with pytest.raises(ModelInputError, match="pooling"):
        ref_model_S.embed(x, pooling="max")
    with pytest.raises(ModelInputError, match="ids_keep"):
        ref_model_S.forward_mae(x, ids_keep=torch.full((8, 25), 100))


def test_chunked_encode_equals_whole_batch(ref_model_S, ref_io, ref_meta, monkeypatch):
    whole = ref_model_S.encode(ref_io["images"], **ref_meta)
    monkeypatch.setattr(ref_model_S, "chunk_size", 3)  # 8 chips -> chunks of 3, 3, 2
    parts = ref_model_S.encode(ref_io["images"], **ref_meta)
    assert (parts.tokens - whole.tokens).abs().max() < 1e-5
    assert abs(parts.moe_loss.item() - whole.moe_loss.item()) < 1e-6  # batch-level loss, not per chunk


def test_sparse_and_dense_experts_agree(ref_model_S, ref_io, ref_meta, monkeypatch):
    from geomoe.model.layers import MoEFeedForward

    outs = {}
    for impl in ("dense", "sparse"):
        monkeypatch.setattr(MoEFeedForward, "impl", impl)
        outs[impl] = ref_model_S.encode(ref_io["images"], **ref_meta).tokens
    assert (outs["dense"] - outs["sparse"]).abs().max() < 1e-4


def test_attention_choice_and_pieces(monkeypatch):
    """CPU bf16 runs matmul attention in cache-sized batch pieces: the same function as one piece
    and as SDPA; float32 keeps SDPA."""
    from geomoe.model.layers import GroupedQueryAttention

    torch.manual_seed(0)
    att = GroupedQueryAttention(144, 8, 4)
    x = torch.randn(9, 105, 144)
    assert att.resolved_impl(x) == "sdpa"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert att.resolved_impl(x) == "matmul"
    att.impl = "sdpa"
    want = att(x)
    att.impl = "matmul"
    whole = att(x)
    monkeypatch.setattr(att, "scores_budget", 3 * 8 * 105 * 105)  # pieces of 3 chips
    pieces = att(x)
    torch.testing.assert_close(whole, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pieces, whole, atol=1e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert att(x[:0]).shape == (0, 105, 144)


def test_inference_attention_defers_normalisation():
    """Without autograd, matmul attention divides by the sums after the PV matmul (a row of
    ones in v): the same function as the normalised softmax, in pieces too; in bf16 about as
    close to float64 as the normalised softmax in bf16."""
    from geomoe.model.layers import _matmul_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 4, m, 18, generator=gen) for m in (210, 105, 105))
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    normed = _matmul_attention(q.requires_grad_(), k, v, 10**9)  # autograd graph: normalised softmax
    with torch.no_grad():
        deferred = _matmul_attention(q, k, v, 10**9)
        pieces = _matmul_attention(q, k, v, 3 * 4 * 210 * 105)
    torch.testing.assert_close(normed.detach().double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(deferred.double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pieces, deferred, atol=1e-6, rtol=0)

    qb, kb, vb = q.detach().bfloat16(), k.bfloat16(), v.bfloat16()
    want = F.scaled_dot_product_attention(qb.double(), kb.double(), vb.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        normed = _matmul_attention(qb.requires_grad_(), kb, vb, 10**9).detach()
        with torch.no_grad():
            deferred = _matmul_attention(qb, kb, vb, 10**9)
    err = {name: ((o.double() - want).norm() / want.norm()).item() for name, o in (("normed", normed), ("deferred", deferred))}
    assert deferred.dtype == torch.bfloat16 and err["normed"] < 6e-3
    assert err["deferred"] < 1.3 * err["normed"], err  # measured 5.3e-3 vs 4.6e-3


def test_empty_batch(ref_model_S):
    """A ChipBatch may hold 0 chips (all skipped): encode/embed return empty results."""
    out = ref_model_S.encode(torch.zeros(0, 7, 40, 40))
    assert out.tokens.shape == (0, 105, 144) and ref_model_S.embed(torch.zeros(0, 7, 40, 40)).shape == (0, 144)


def test_top_k_by_max_equals_topk():
    """The GPU routing top-k (rounds of max) picks the same experts and values as torch.topk."""
    from geomoe.model.layers import _top_k_by_max

    h = torch.randn(5000, 5, generator=torch.Generator().manual_seed(0))
    for k in (2, 3):
        want_v, want_i = torch.topk(h, k, dim=-1)
        got_v, got_i = _top_k_by_max(h, k)
        assert torch.equal(got_v, want_v) and torch.equal(got_i, want_i)


def test_gated_swiglu_backward_is_the_gradient():
    """The hand-written backward of the dense expert mixing (pretraining) is the true gradient
    of its forward, for W x, V x and the gates."""
    from geomoe.model.layers import _GatedSwiGLU

    gen = torch.Generator().manual_seed(0)
    aw, v, g = (torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
                for s in ((6, 3 * 4), (6, 4), (6, 3)))
    assert torch.autograd.gradcheck(_GatedSwiGLU.apply, (aw, v, g))


@pytest.mark.parametrize("experts", [3, 4, 5])
def test_top_k_mixing_is_the_dense_mixing(experts):
    """The CPU eval mixing over the k routed experts' slices equals the dense mixing over all E
    with zero-off-top-k gates (up to silu's last bit)."""
    from geomoe.model.layers import _mix_experts, _mix_top_k

    gen = torch.Generator().manual_seed(experts)
    aw = torch.randn(997, experts * 72, generator=gen) * 4
    idx = torch.rand(997, experts, generator=gen).argsort(-1)[:, :2]
    w = torch.softmax(torch.randn(997, 2, generator=gen), -1)
    gates = torch.zeros(997, experts).scatter(1, idx, w)
    torch.testing.assert_close(_mix_top_k(aw, idx, w, experts), _mix_experts(aw, gates), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("attn,moe", [("sdpa", "sparse"), ("matmul", "dense"), ("sdpa", "dense")])
def test_training_layer_impls_agree(ref_model_S, ref_io, ref_meta, monkeypatch, attn, moe):
    """The pretraining step may run SDPA or explicit attention, sparse or dense experts (chosen
    per device/precision): loss and gradients are the same function either way."""
    from geomoe.model.layers import GroupedQueryAttention, MoEFeedForward

    def loss_and_grads():
        ref_model_S.zero_grad(set_to_none=True)
        out = ref_model_S.forward_mae(ref_io["images"], **ref_meta, ids_keep=ref_io["mae_ids_keep"])
        out.loss.backward()
        return out.loss.detach(), {n: p.grad.clone() for n, p in ref_model_S.named_parameters() if p.grad is not None}

    monkeypatch.setattr(GroupedQueryAttention, "impl", "matmul")
    monkeypatch.setattr(MoEFeedForward, "impl", "sparse")
    want_loss, want = loss_and_grads()
    monkeypatch.setattr(GroupedQueryAttention, "impl", attn)
    monkeypatch.setattr(MoEFeedForward, "impl", moe)
    got_loss, got = loss_and_grads()
    assert torch.allclose(got_loss, want_loss, rtol=1e-5)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-3, atol=1e-5), name


def test_fast_dropout_rate_scale_and_seed():
    """CPU training dropout: drops ~p of the values, keeps the mean, replays under manual_seed."""
    from geomoe.model.layers import _fast_dropout

    x = torch.ones(1000, 999, requires_grad=True)
    torch.manual_seed(3)
    y = _fast_dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(_fast_dropout(x, 0.1), y)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002
    assert abs(y.mean().item() - 1.0) < 0.003
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask * scale)/dx = mask * scale
    assert _fast_dropout(x, 0.0) is x
