"""Speed of geomoe's MoE-MAE vs the reference-style implementation, in ONE run, same weights.

    python benchmarks/bench_model.py            # ~2-3 min on 2 CPU cores
    python benchmarks/bench_model.py --quick    # batches 64/256 only, fewer repeats
    python benchmarks/bench_model.py --device cuda --batches 1024 8192 --no-baseline
    python benchmarks/bench_model.py --quick --compile   # + rows for compile_for_inference

Prints chips/s (eval encode, size S) for fp32 and bf16 autocast at each batch, a training
step (batch 128: forward_mae + backward + AdamW), the speed-up ratios over the baseline
(benchmarks/reference_moemae.py: Python expert loop, repeated K/V, hand-written attention),
and the max-abs difference of geomoe's tokens from the baseline's (outputs unchanged).
Timings are the best of the repeats (robust to other load on the machine). On a CPU shared
with other jobs use ``--threads 1``: with 2 threads, foreign load stalls torch's thread
barriers and both implementations' numbers collapse unpredictably (seen: 4 chips/s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reference_moemae import RefMoEMAE, mae_loss  # noqa: E402

from geomoe.model import compile_for_inference, load_checkpoint  # noqa: E402

CKPT = HERE.parent / "tests" / "data" / "reference" / "ref_S_seed0.pth"
IO = HERE.parent / "tests" / "data" / "reference" / "ref_S_seed0_io.pt"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, reps: int, budget_s: float, device: str, warmup: bool = True) -> float:
    """Best wall time of up to ``reps`` calls (stops early after ``budget_s``), after a warm-up call."""
    if warmup:
        fn()
        _sync(device)
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


def inputs(batch: int, device: str) -> tuple[torch.Tensor, dict]:
    """Real BigEarthNet-Landsat chips (the 8 fixture chips, tiled) with their metadata."""
    io = torch.load(IO, weights_only=True)
    rep = -(-batch // 8)
    x = io["images"].repeat(rep, 1, 1, 1)[:batch].to(device)
    meta = {k: io[f"meta_{k}"].repeat(rep, 1)[:batch].to(device) for k in ("week", "hour", "lat", "lon")}
    return x, meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches 64/256, fewer repeats (~1 min)")
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the slow baseline (GPU runs)")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--compile", action="store_true",
                    help="also time geomoe.model.compile_for_inference (inductor; compile time printed)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    batches = args.batches or ([64, 256] if args.quick else [64, 256, 1024])
    reps = 2 if args.quick else 3
    budget = 4.0 if args.quick else 8.0

    ck = torch.load(CKPT, weights_only=True)["model_state"]
    ref = RefMoEMAE("S", noise="never").to(dev).eval()
    ref.load_state_dict(ck)
    ours = load_checkpoint(CKPT, map_location=dev)
    amp = "cuda" if dev.startswith("cuda") else "cpu"
    print(f"MoE-MAE size S, device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'batch':>6} {'baseline fp32':>14} {'geomoe fp32':>12} {'geomoe bf16':>12} {'x fp32':>7} {'x bf16':>7}"
          f" {'maxabs fp32':>12} {'maxabs bf16':>12}")
    compiled_rows = []
    for b in batches:
        x, meta = inputs(b, dev)

        def run_ref():
            with torch.no_grad():
                return ref.encoder(x, **meta)

        def run_ours():
            return ours.encode(x, **meta)

        def run_bf16():
            with torch.autocast(amp, dtype=torch.bfloat16):
                return ours.encode(x, **meta)

        t_ref = None if args.no_baseline else best_time(run_ref, 1 if b >= 1024 else reps, budget, dev, warmup=b < 1024)
        t32 = best_time(run_ours, reps, budget, dev)
        t16 = best_time(run_bf16, reps, budget, dev)
        if t_ref is not None:
            tokens = run_ref()[0]
            d32 = (run_ours().tokens - tokens).abs().max().item()
            d16 = (run_bf16().tokens.float() - tokens).abs().max().item()
            r32, r16, cref = t_ref / t32, t_ref / t16, f"{b / t_ref:14.0f}"
        else:
            d32 = d16 = r32 = r16 = float("nan")
            cref = f"{'-':>14}"
        print(f"{b:>6} {cref} {b / t32:12.0f} {b / t16:12.0f} {r32:7.2f} {r16:7.2f} {d32:12.2e} {d16:12.2e}")
        if args.compile:
            compiled_rows.append((b, x, meta, t_ref))

    if args.compile:  # after the eager rows: compiling changes the model's layer implementations
        compile_for_inference(ours, fp32=True)  # both precisions compiled, to compare
        print("geomoe compiled (compile_for_inference; first call per precision includes compiling):")
        for b, x, meta, t_ref in compiled_rows:
            t0 = time.perf_counter()
            out32 = ours.encode(x, **meta).tokens
            c32 = time.perf_counter() - t0
            t0 = time.perf_counter()
            with torch.autocast(amp, dtype=torch.bfloat16):
                out16 = ours.encode(x, **meta).tokens
            c16 = time.perf_counter() - t0
            t32 = best_time(lambda x=x, meta=meta: ours.encode(x, **meta), reps, budget, dev, warmup=False)

            def run_cbf16(x=x, meta=meta):
                with torch.autocast(amp, dtype=torch.bfloat16):
                    return ours.encode(x, **meta)

            t16 = best_time(run_cbf16, reps, budget, dev, warmup=False)
            ratios = "" if t_ref is None else f" ({t_ref / t32:.2f}x / {t_ref / t16:.2f}x baseline)"
            with torch.no_grad():
                tokens = ref.encoder(x, **meta)[0] if t_ref is not None else None
            diff = "" if tokens is None else (
                f", maxabs {(out32 - tokens).abs().max().item():.2e} / {(out16.float() - tokens).abs().max().item():.2e}")
            print(f"{b:>6} fp32 {b / t32:.0f} chips/s, bf16 {b / t16:.0f} chips/s{ratios}{diff}; "
                  f"first call {c32:.0f} s / {c16:.0f} s")

    if not args.no_train:
        b = 128
        x, meta = inputs(b, dev)
        ids = torch.stack([torch.randperm(100, generator=torch.Generator().manual_seed(i))[:25] for i in range(b)]).to(dev)
        ref_t = RefMoEMAE("S", noise="train").to(dev).train()
        ref_t.load_state_dict(ck)
        ours_t = load_checkpoint(CKPT, map_location=dev).train()
        opt_r = torch.optim.AdamW(ref_t.parameters(), lr=1e-4)
        opt_o = torch.optim.AdamW(ours_t.parameters(), lr=1e-4)

        def step_ref():
            opt_r.zero_grad(set_to_none=True)
            pred, mask, _, moe = ref_t(x, **meta, ids_keep=ids)
            mae_loss(ref_t, x, pred, mask, moe).backward()
            opt_r.step()

        def step_ours(bf16: bool = False):
            opt_o.zero_grad(set_to_none=True)
            with torch.autocast(amp, dtype=torch.bfloat16, enabled=bf16):
                out = ours_t.forward_mae(x, **meta, ids_keep=ids)
            out.loss.backward()
            opt_o.step()

        t_ref = None if args.no_baseline else best_time(step_ref, reps, budget, dev)
        t32 = best_time(step_ours, reps, budget, dev)
        t16 = best_time(lambda: step_ours(True), reps, budget, dev)
        if t_ref is not None:
            print(f"train step (batch {b}, fwd+bwd+AdamW): baseline {b / t_ref:.0f} chips/s, geomoe fp32 "
                  f"{b / t32:.0f} ({t_ref / t32:.2f}x), bf16 {b / t16:.0f} ({t_ref / t16:.2f}x)")
        else:
            print(f"train step (batch {b}): geomoe fp32 {b / t32:.0f} chips/s, bf16 {b / t16:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
