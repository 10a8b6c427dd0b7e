"""Opt-in torch.compile of the eval encoder: same outputs as eager, clean fallback when it cannot compile."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters
from torch._inductor.codegen.cpp import CppVecOverrides
from torch._inductor.utils import run_and_get_code

from geomoe.model import build_model, compile_for_inference, uncompile


def _small_model():
    """XXS cut to 3 layers, one per expert count (3, 4, 5): compiles in a third of the full XXS time."""
    return build_model("XXS", depth=3).eval()


def _inputs(b: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 7, 40, 40, generator=g)
    meta = {k: torch.randn(b, 2, generator=g) for k in ("week", "hour", "lat", "lon")}
    return x, meta


def test_compiled_encode_matches_eager():
    torch.manual_seed(0)
    model = _small_model()
    model.chunk_size = 4
    x, meta = _inputs(10)  # two full (compiled) chunks + an eager tail of 2
    eager = model.encode(x, **meta)
    torch._dynamo.reset()
    compile_for_inference(model, fp32=True)
    out = model.encode(x, **meta)
    assert model._compiled_encode is not None  # it really compiled, no silent fallback
    torch.testing.assert_close(out.tokens, eager.tokens, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.raw_tokens, eager.raw_tokens, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.moe_loss, eager.moe_loss, atol=1e-5, rtol=0)
    again = model.encode(x, **meta)
    assert torch.equal(again.tokens, out.tokens)  # deterministic
    other = _small_model()  # same size, other weights: may share the graph, not its weights
    other.chunk_size = 4
    want = other.encode(x, **meta).tokens
    compile_for_inference(other, fp32=True)
    torch.testing.assert_close(other.encode(x, **meta).tokens, want, atol=1e-4, rtol=0)
    uncompile(model)
    assert torch.equal(model.encode(x, **meta).tokens, eager.tokens)


def test_default_compiles_only_autocast_calls():
    """fp32 stays eager (bit-identical to before) unless fp32=True; bf16 autocast goes compiled,
    its vectorised exps as exp_u20."""
    torch.manual_seed(0)
    model = _small_model()
    model.chunk_size = 4
    x, meta = _inputs(4)
    eager = model.encode(x, **meta)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager16 = model.embed(x, **meta)
    default_exp = CppVecOverrides.__dict__["exp"]
    compile_for_inference(model)
    assert torch.equal(model.encode(x, **meta).tokens, eager.tokens)
    counters.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16, code = run_and_get_code(model.embed, x, **meta)  # resets dynamo: a fresh compile
    assert model._compiled_encode is not None and counters["stats"]["unique_graphs"] >= 1
    assert (out16 - eager16).abs().max() < 0.05 * eager16.abs().max()
    kernels = "\n".join(code)
    assert ".exp_u20()" in kernels and ".exp()" not in kernels  # softmax and silu: the fast exp
    # per layer only the q/k/v projection and the float32 gate keep addmm; the other linears are
    # matmuls whose bias add is fused into the next kernel (fusable_linear)
    assert kernels.count("extern_kernels.addmm(") == 2 * len(model.blocks)
    assert kernels.count("extern_kernels.mm(") == 1 + 3 * len(model.blocks)
    assert CppVecOverrides.__dict__["exp"] is default_exp  # inductor's template restored
    assert torch.equal(model.encode(x, **meta).tokens, eager.tokens)  # layer choices restored


def test_compile_failure_falls_back_to_eager():
    torch.manual_seed(0)
    model = _small_model()
    model.chunk_size = 4
    x, meta = _inputs(4)
    eager = model.encode(x, **meta)
    torch._dynamo.reset()
    compile_for_inference(model, fp32=True)
    # a machine without a C compiler; no cached kernel to hide the failure. (config.patch, not
    # monkeypatch: monkeypatch's undo deletes torch config entries for the rest of the process)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
        with pytest.warns(RuntimeWarning, match="running eager"):
            out = model.encode(x, **meta)
    assert model._compiled_encode is None
    torch.testing.assert_close(out.tokens, eager.tokens, atol=1e-5, rtol=0)


def test_one_compiled_batch_size_off_cpu():
    """Off the CPU the first batch size is the compiled one; other sizes (tails) stay eager,
    so a stream of batches never triggers a recompile. (Shapes only: meta tensors, no GPU.)"""
    from geomoe.model.compile import use_compiled

    model = compile_for_inference(build_model("XXS"), fp32=True)
    batch = lambda n: torch.empty(n, 7, 40, 40, device="meta")  # noqa: E731
    assert use_compiled(model, batch(8)) and model._compiled_batch == 8
    assert not use_compiled(model, batch(3))
    assert use_compiled(model, batch(8))
    compile_for_inference(model, fp32=True)  # recompiling forgets the size
    assert model._compiled_batch is None
    assert use_compiled(model, batch(4)) and not use_compiled(model, batch(8))
    assert use_compiled(model, torch.empty(model.chunk_size, 7, 40, 40)) and not use_compiled(model, torch.empty(5, 7, 40, 40))


def test_exp_u20_failure_falls_back_to_default_exp_not_eager(monkeypatch, recwarn):
    """If the exp_u20 code does not build (a torch without it), the graph compiles with the default exp."""
    import geomoe.model.compile as compile_module

    torch.manual_seed(0)
    model = _small_model()
    model.chunk_size = 4
    x, meta = _inputs(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager16 = model.embed(x, **meta)
    monkeypatch.setattr(compile_module, "_exp_u20", lambda v: f"{v}.no_such_exp()")  # C++ that cannot build
    monkeypatch.setattr(compile_module, "_exp_u20_failed", False)
    compile_for_inference(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16, code = run_and_get_code(model.embed, x, **meta)
    assert compile_module._exp_u20_failed and model._compiled_encode is not None  # compiled, not eager
    assert not [w for w in recwarn if "running eager" in str(w.message)]
    assert ".exp()" in code[-1] and "no_such_exp" not in code[-1]  # the failed try's code comes first
    assert (out16 - eager16).abs().max() < 0.05 * eager16.abs().max()


def test_exp_u20_graphs_cached_under_their_own_key(monkeypatch):
    """exp_u20 graphs go into inductor's caches keyed by the swap: compiling again loads them
    (no 40-50 s compile per process for size S), and a default-exp compile of the same graph
    does not pick them up."""
    import geomoe.model.compile as compile_module

    model = _small_model()
    model.chunk_size = 4
    x, meta = _inputs(4)

    def compiled_embed():
        torch._dynamo.reset()
        counters.clear()
        compile_for_inference(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, code = run_and_get_code(model.embed, x, **meta)
        hits = counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]
        return out, "\n".join(code), hits

    first, _, _ = compiled_embed()  # compiles, or loads what an earlier run stored
    again, code, hits = compiled_embed()
    assert hits >= 1 and ".exp_u20()" in code and torch.equal(again, first)
    monkeypatch.setattr(compile_module, "_exp_u20_failed", True)  # compile with the default exp
    _, code, _ = compiled_embed()
    assert ".exp()" in code and ".exp_u20()" not in code


def test_compiled_dropout_keeps_eager_elements():
    """The compiled dropout draws eager's bits in eager's order (odd sizes, two draws in one graph)."""
    from geomoe.model.layers import _fast_dropout

    x = torch.randn(37, 11)

    def two(x):
        return _fast_dropout(x, 0.5), _fast_dropout(x * 2, 0.1)

    torch.manual_seed(3)
    want = two(x)
    torch.manual_seed(3)
    got = torch.compile(two, fullgraph=True)(x)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert 0 < (want[0] == 0).sum() < x.numel()  # it did drop, not everything


def _train_pass(model, x, meta, ids_keep=None):
    """Seeded masked-autoencoder pass + backward: (MAEOutput, {name: grad})."""
    torch.manual_seed(11)
    out = model.forward_mae(x, **meta, ids_keep=ids_keep)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    return out, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}


def test_compiled_training_pass_matches_eager():
    """compile_for_training: the same loss, outputs and gradients as eager in fp32 with the same
    seed, i.e. the same dropout masks and routing noise; eval and other batch sizes stay eager."""
    from geomoe.model import compile_for_training

    torch.manual_seed(0)
    model = build_model("XXS", depth=2, decoder_depth=1).train()  # small: compiles faster
    x, meta = _inputs(6)
    ids = torch.stack([torch.randperm(100, generator=torch.Generator().manual_seed(i))[:25] for i in range(6)])
    want, want_grads = _train_pass(model, x, meta, ids)
    want_random, _ = _train_pass(model, x, meta)  # mask drawn from the seeded global generator
    torch._dynamo.reset()
    counters.clear()
    compile_for_training(model)
    got, grads = _train_pass(model, x, meta, ids)
    assert model._compiled_mae is not None and counters["stats"]["unique_graphs"] == 1  # no fallback
    for name in ("loss", "loss_masked", "loss_unmasked", "moe_loss", "pred"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-5)
    assert torch.equal(got.ids_restore, want.ids_restore) and torch.equal(got.mask, want.mask)
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(_train_pass(model, x, meta)[0].loss, want_random.loss, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.forward_mae(x[:4], **{k: v[:4] for k, v in meta.items()})  # another batch size: eager
        model.eval()
        model.forward_mae(x, **meta, ids_keep=ids)  # eval mode: eager
    assert counters["stats"]["unique_graphs"] == 1


def test_training_compile_failure_falls_back_to_eager():
    import torch._functorch.config as functorch_config

    from geomoe.model import compile_for_training

    torch.manual_seed(0)
    model = build_model("XXS", depth=2, decoder_depth=1).train()
    x, meta = _inputs(2)
    want, _ = _train_pass(model, x, meta)
    torch._dynamo.reset()
    compile_for_training(model)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}), \
            functorch_config.patch(enable_autograd_cache=False):
        with pytest.warns(RuntimeWarning, match="(?s)masked-autoencoder pass failed.*running eager"):
            got, _ = _train_pass(model, x, meta)
    assert model._compiled_mae is None
    assert torch.equal(got.loss, want.loss)
