"""Opt-in ``torch.compile`` (inductor) of the eval encoder and of the pretraining pass, with a clean fallback to eager.

Why opt-in: compiling costs tens of seconds per precision and batch shape for the encoder
(much less in a later process, from inductor's disk cache) and minutes for the training pass,
so it pays off only for long runs. Under bf16 autocast the compiled encoder and training step
are clearly faster than eager on CPU and GPU; fp32 gains little, so by default only autocast
calls use the graph. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import functools
import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch

#: what these functions take: a geomoe.model.mae.MoEMAE, named only in words so that this module
#: imports nothing back from mae (mae imports this one)
_MoEMAE = torch.nn.Module

log = logging.getLogger(__name__)
#: set once compiling with :func:`cpu_exp_u20` failed in this process (the default exp is used then)
_exp_u20_failed = False


def compile_for_inference(model: _MoEMAE, *, fp32: bool = False) -> _MoEMAE:
    """Compile ``model``'s per-chunk encoder for eval; returns the same model (in eval mode).

    The compiled graph is used under autocast (bf16), where it is clearly faster than eager on
    CPU and GPU; plain fp32 calls stay eager (compiled fp32 gained little on CPU) unless
    ``fp32=True``. The graph uses static-shape layers (dense experts; matmul attention on CPU,
    flash SDPA on CUDA), which inductor fuses better than the eager-fast sparse-expert path;
    fp32 outputs stay within ~1e-5 of eager. On CPU only full chunks of ``model.chunk_size``
    chips use the graph (one shape, no recompiles); a smaller tail chunk runs eager. On CUDA the
    first batch size compiles (about a minute) and other sizes (tails) run eager.
    The weights stay inputs of the graph (not frozen constants), so loading new weights needs no
    recompile and models of one size share a graph; inductor's freezing (prepacked oneDNN
    matmuls, also with max-autotune) measured no faster on the 2-core CPU. If compilation fails
    (no C compiler, unsupported platform), a RuntimeWarning is issued and the model runs eager.
    The CPU bf16 graph computes exp with ATen's faster ``exp_u20`` (:func:`cpu_exp_u20`);
    fp32 graphs keep the default exp.
    """
    model.eval()
    model._compiled_encode = torch.compile(_static_encode(model), dynamic=False)
    model._compiled_fp32 = fp32
    model._compiled_batch = None
    return model


def _static_encode(model: _MoEMAE):
    def encode(images, meta):
        return model._encode(images, meta, None)

    return encode


def uncompile(model: _MoEMAE) -> _MoEMAE:
    """Back to the default eager path (encoder and masked-autoencoder pass)."""
    model._compiled_encode = None
    model._compiled_mae = None
    return model


def use_compiled(model: _MoEMAE, images) -> bool:
    """Whether this eval chunk goes through the compiled graph.

    One batch shape per model, so that a stream of batches never recompiles: on CPU the
    chunk size; elsewhere the first batch size seen (a smaller tail batch runs eager).
    """
    if model._compiled_encode is None or model.training:
        return False
    if not (model._compiled_fp32 or torch.is_autocast_enabled(images.device.type)):
        return False
    n = images.shape[0]
    if images.device.type == "cpu":
        return n == model.chunk_size
    if model._compiled_batch is None:
        model._compiled_batch = n
    return n == model._compiled_batch


def run_compiled(model: _MoEMAE, images, meta):
    """Call the compiled encoder; on any compile/run failure warn once and fall back to eager."""
    # static shapes, no host sync: what inductor fuses best. Attention: on CPU the explicit
    # matmul-softmax fuses better; on CUDA the flash SDPA kernel is faster (H100, bf16).
    attn = "matmul" if images.device.type == "cpu" else "sdpa"
    global _exp_u20_failed
    try:
        with _layer_impls(model.blocks, attn):
            if images.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not _exp_u20_failed:
                try:
                    with cpu_exp_u20():
                        return model._compiled_encode(images, meta)
                except Exception:  # e.g. a torch whose vector class lacks exp_u20: try the default exp
                    log.warning("compiling with exp_u20 failed; trying the default exp", exc_info=True)
                    out = model._compiled_encode(images, meta)
                    _exp_u20_failed = True  # only exp_u20 failed: do not try it again
                    return out
            return model._compiled_encode(images, meta)
    except Exception as exc:  # inductor/dynamo raise many types; eager is always a valid answer
        _warn_fallback("encoder", exc)
        uncompile(model)
    return model._encode(images, meta, None)


def compile_for_training(model: _MoEMAE) -> _MoEMAE:
    """Compile ``model``'s masked-autoencoder pass (:meth:`MoEMAE.forward_mae`) and its backward.

    Why opt-in: compiling takes minutes at the first step (less with inductor's cache warm) and
    the compiled step is only moderately faster than eager on CPU (bf16), so it pays off only
    for runs of about a thousand steps or more (benchmarks/README.md). Not measured on a GPU yet.
    Only training-mode calls without a ``generator`` use the graph, at the first batch size
    seen (other sizes run eager: no recompiles). The graph draws its dropout bits and routing
    noise from the global generator in eager's order, so a seeded compiled step keeps the same
    dropout masks and noise as eager. Experts run dense (static shapes). If compilation fails,
    a RuntimeWarning is issued and training continues eager.
    """
    model._compiled_mae = torch.compile(model._mae, dynamic=False)
    model._compiled_mae_batch = None
    return model


def use_compiled_mae(model: _MoEMAE, images) -> bool:
    """Whether this masked-autoencoder pass goes through the compiled graph (training mode, one batch size)."""
    if model._compiled_mae is None or not model.training:
        return False
    if model._compiled_mae_batch is None:
        model._compiled_mae_batch = images.shape[0]
    return images.shape[0] == model._compiled_mae_batch


def run_compiled_mae(model: _MoEMAE, images, meta, ids_keep):
    """Call the compiled masked-autoencoder pass; on a compile/run failure warn and run eager."""
    import torch._inductor.config as inductor_config

    try:
        # inductor would draw the routing noise from its own generator; ATen's keeps eager's stream
        with _layer_impls([*model.blocks, *model.decoder_blocks], None), \
                inductor_config.patch(fallback_random=True):
            return model._compiled_mae(images, meta, ids_keep, None)
    except Exception as exc:
        _warn_fallback("masked-autoencoder pass", exc)
        model._compiled_mae = None
    return model._mae(images, meta, ids_keep, None)


def _warn_fallback(what: str, exc: Exception) -> None:
    warnings.warn(f"torch.compile of the geomoe {what} failed ({type(exc).__name__}: {exc}); "
                  "running eager instead", RuntimeWarning, stacklevel=4)
    log.warning("compiled %s failed, falling back to eager", what, exc_info=True)


@contextmanager
def _layer_impls(blocks, attn: str | None) -> Iterator[None]:
    """Inside the ``with``: dense experts in ``blocks`` and, if ``attn`` is given, that attention."""
    layers = [blk.moe for blk in blocks] + ([blk.attn for blk in blocks] if attn else [])
    saved = [layer.__dict__.get("impl") for layer in layers]
    for layer in layers:
        layer.impl = attn if hasattr(layer, "heads") else "dense"
    try:
        yield
    finally:
        for layer, impl in zip(layers, saved):
            if impl is None:
                layer.__dict__.pop("impl", None)
            else:
                layer.impl = impl


@contextmanager
def cpu_exp_u20() -> Iterator[None]:
    """While inductor generates CPU code: vectorised ``exp`` as ATen's ``exp_u20``, not Sleef's u10.

    Why: nearly all exps of the bf16 graph are the attention softmax and the experts' silu,
    whose results are rounded to bf16 (8-bit mantissa); ``exp_u20`` (~20 ulp in float32) is
    the exp ATen's own CPU flash attention uses for its softmax. It makes the compiled bf16
    encode a little faster, no less accurate against the fp32 tokens (benchmarks/README.md).
    Inductor has no option for it, so this swaps
    the code template ``CppVecOverrides.exp`` (private API: a torch without it keeps the default
    exp). Inductor's caches cannot see the swap, so a no-op post-grad pass whose ``uuid`` names
    it (:func:`_exp_u20_cache_tag`) goes into their keys: graphs built with exp_u20 are cached
    apart from default-exp ones, and a later process loads them instead of compiling again
    (seconds instead of most of a minute to the first compiled call). If the caller
    already set such a pass, the graph is kept out of the caches instead.
    Only code generated inside the block changes; compiled graphs keep what they were built with
    (dynamo shares one graph between models of a size, so this is not a per-model choice).
    """
    try:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config
        from torch._inductor.codegen.cpp import CppVecOverrides

        default = CppVecOverrides.__dict__["exp"]
    except (ImportError, KeyError):
        yield
        return
    tag = _exp_u20_cache_tag() if inductor_config.post_grad_custom_post_pass is None else None
    if tag is not None:
        keys = inductor_config.patch(post_grad_custom_post_pass=tag)
    else:  # a pass of the caller's own (or a torch without the interface): stay out of the caches
        keys = _no_caches(inductor_config, functorch_config)
    CppVecOverrides.exp = staticmethod(_exp_u20)
    try:
        with keys:
            yield
    finally:
        CppVecOverrides.exp = default


@contextmanager
def _no_caches(inductor_config, functorch_config) -> Iterator[None]:
    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
        yield


@functools.cache
def _exp_u20_cache_tag():
    """A post-grad pass that changes nothing; its ``uuid`` keys inductor's caches to the exp_u20 swap."""
    try:
        from torch._inductor.custom_graph_pass import CustomGraphPass
    except ImportError:
        return None

    class ExpU20CacheTag(CustomGraphPass):
        def __call__(self, graph) -> None:
            return None

        def uuid(self) -> str:  # the template itself: another template is another key
            return f"geomoe.cpu_exp_u20:{_exp_u20('x')}"

    return ExpU20CacheTag()


def _exp_u20(x: str) -> str:
    return f"{x}.exp_u20()"
