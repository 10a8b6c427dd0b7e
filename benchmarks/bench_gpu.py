"""geomoe's MoE-MAE on a CUDA GPU: correctness first, then encoder chips/s at large batches.

    python benchmarks/bench_gpu.py                      # ~5 min on an H100 (compiles twice)
    python benchmarks/bench_gpu.py --batches 4096 --no-compile --json out.json

Checks on the GPU, against the CPU reference fixture (tests/data/reference): fp32 tokens max-abs
(TF32 off), bf16-autocast relative L2 of the tokens, and that two encodes are bit-identical.
Then times, with CUDA events (median of the repeats, after warm-up): the baseline
(benchmarks/reference_moemae.py), geomoe eager fp32 / bf16 autocast, geomoe compiled bf16
(``compile_for_inference``), the host-to-host embed path (pinned chips -> GPU -> bf16 encode ->
mean-pooled (B, D) back on the host), and a bf16 pretraining step, eager and compiled
(``compile_for_training``). Only needs torch (+ safetensors).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_model import CKPT, IO, inputs, train_step_fns  # noqa: E402
from reference_moemae import RefMoEMAE  # noqa: E402

from geomoe.model import compile_for_inference, load_checkpoint  # noqa: E402


def cuda_time(fn, reps: int) -> float:
    """Median seconds per call of ``fn`` (CUDA events), after two warm-up calls."""
    fn(), fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def real_inputs(batch: int, device: str) -> tuple[torch.Tensor, dict]:
    """bench_model's tiled fixture chips, each copy jittered so no two rows are equal."""
    x, meta = inputs(batch, "cpu")
    x = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(batch))
    return x.to(device), {k: v.to(device) for k, v in meta.items()}


def host_embed(model, x: torch.Tensor, meta: dict):
    """A callable that runs geomoe.embed.pipeline's path: pinned host chips -> GPU -> bf16 embed -> host."""
    xh, mh = x.cpu().pin_memory(), {k: v.cpu().pin_memory() for k, v in meta.items()}

    def run():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            e = model.embed(xh.to("cuda", non_blocking=True), **{k: v.to("cuda", non_blocking=True) for k, v in mh.items()})
        return e.cpu()

    return run


def check(model, dev: str) -> dict:
    x, meta = inputs(8, dev)  # exactly the fixture's 8 chips
    want = torch.load(IO, weights_only=True)["encoder_normed_tokens"].to(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    a = model.encode(x, **meta).tokens
    b = model.encode(x, **meta).tokens
    with torch.autocast("cuda", dtype=torch.bfloat16):
        c = model.encode(x, **meta).tokens.float()
    return {
        "fp32_maxabs_vs_fixture": (a - want).abs().max().item(),
        "fp32_repeat_bit_identical": bool(torch.equal(a, b)),
        "bf16_rel_l2_vs_fixture": ((c - want).norm() / want.norm()).item(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--compile-batches", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None, help="write all figures here")
    args = ap.parse_args(argv)
    dev = "cuda"
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}")
    ck = torch.load(CKPT, weights_only=True)["model_state"]
    ours = load_checkpoint(CKPT, map_location=dev)
    res: dict = {"device": props.name, "torch": torch.__version__, "check": check(ours, dev), "encode": [],
                 "compiled": [], "embed_host": [], "train": []}
    print("check:", json.dumps(res["check"]))

    ref = RefMoEMAE("S", noise="never").to(dev).eval()
    ref.load_state_dict(ck)
    # the baseline runs fp32 only: the published gate's scatter fails under autocast (dtype mismatch)
    print(f"{'batch':>6} {'baseline fp32':>14} {'geomoe fp32':>12} {'geomoe bf16':>12}  chips/s")
    for b in args.batches:
        x, meta = real_inputs(b, dev)

        def run_ref():
            with torch.no_grad():
                return ref.encoder(x, **meta)

        def run_ours(bf16: bool):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                return ours.encode(x, **meta)

        reps = max(3, args.reps * 1024 // b)
        row = {"batch": b}
        for name, fn in (("baseline_fp32", run_ref), ("geomoe_fp32", lambda: run_ours(False)), ("geomoe_bf16", lambda: run_ours(True))):
            row[name] = b / cuda_time(fn, reps)
        res["encode"].append(row)
        print(f"{b:>6} {row['baseline_fp32']:14.0f} {row['geomoe_fp32']:12.0f} "
              f"{row['geomoe_bf16']:12.0f}")
        del x, meta
        torch.cuda.empty_cache()

    # host -> GPU -> host, as geomoe.embed.pipeline does it (pinned memory, non-blocking copy, bf16 autocast)
    for b in args.batches:
        run_embed = host_embed(ours, *real_inputs(b, "cpu"))
        t = cuda_time(run_embed, max(3, args.reps * 1024 // b))
        res["embed_host"].append({"batch": b, "chips_per_s": b / t})
        print(f"embed host->GPU->host, batch {b}: {b / t:.0f} chips/s")

    if not args.no_compile:
        io = torch.load(IO, weights_only=True)
        for b in args.compile_batches:
            compile_for_inference(ours)  # one compiled batch size per compile (others run eager)
            x, meta = real_inputs(b, dev)
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                ours.encode(x, **meta)
            torch.cuda.synchronize()
            first = time.perf_counter() - t0

            def run_c():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return ours.encode(x, **meta)

            t = cuda_time(run_c, max(3, args.reps * 1024 // b))
            # accuracy of the compiled graph on the exact fixture chips, tiled to the compiled batch size
            xe, me = inputs(b, dev)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                got = ours.encode(xe, **me).tokens[:8].float()
            want = io["encoder_normed_tokens"].to(dev)
            rel = ((got - want).norm() / want.norm()).item()
            run_embed_c = host_embed(ours, x, meta)
            te = cuda_time(run_embed_c, max(3, args.reps * 1024 // b))
            res["compiled"].append({"batch": b, "chips_per_s": b / t, "embed_host_chips_per_s": b / te,
                                    "first_call_s": first, "rel_l2": rel})
            print(f"compiled bf16, batch {b}: {b / t:.0f} chips/s, host->GPU->host embed {b / te:.0f} chips/s "
                  f"(first call {first:.0f} s, rel L2 {rel:.1e})")
            del x, meta, xe, me, run_embed_c
            torch.cuda.empty_cache()

    for b in (1024, 4096):
        # the baseline step is fp32: it fails under autocast
        steps = train_step_fns(b, dev, ck, compiled=not args.no_compile)
        tr, to = cuda_time(steps["baseline"], 5), cuda_time(steps["bf16"], 5)
        row = {"batch": b, "baseline_fp32": b / tr, "geomoe_bf16": b / to}
        line = f"train step, batch {b}: baseline fp32 {b / tr:.0f}, geomoe bf16 {b / to:.0f} chips/s ({tr / to:.2f}x)"
        if "compiled bf16" in steps:  # compile_for_training (not yet measured on a GPU)
            t0 = time.perf_counter()
            steps["compiled bf16"]()
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            tc = cuda_time(steps["compiled bf16"], 5)
            row |= {"compiled_bf16": b / tc, "compiled_first_call_s": first}
            line += f", compiled bf16 {b / tc:.0f} ({tr / tc:.2f}x; first call {first:.0f} s)"
        res["train"].append(row)
        print(line)
        del steps

    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
