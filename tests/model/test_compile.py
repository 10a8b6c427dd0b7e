"""Opt-in torch.compile of the eval encoder: same outputs as eager, clean fallback when it cannot compile."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters
from torch._inductor.codegen.cpp import CppVecOverrides
from torch._inductor.utils import run_and_get_code

from geomoe.model import build_model, compile_for_inference, uncompile


def _inputs(b: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 7, 40, 40, generator=g)
    meta = {k: torch.randn(b, 2, generator=g) for k in ("week", "hour", "lat", "lon")}
    return x, meta


def test_compiled_encode_matches_eager():
    torch.manual_seed(0)
    model = build_model("XXS").eval()
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
    other = build_model("XXS").eval()  # same size, other weights: may share the graph, not its weights
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
    model = build_model("XXS").eval()
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
    model = build_model("XXS").eval()
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
    model = build_model("XXS").eval()
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
