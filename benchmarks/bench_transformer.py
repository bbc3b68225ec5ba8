"""Compact model speed: training throughput and sampling latency, float32 vs bfloat16 autocast, one run.

Also prints the linear layers' achieved GFLOP/s beside a bfloat16 GEMM peak measured in the same run, and
the default sampling call at each shipped default model's shape (64² v1, 128² v2), eager and compiled.
Usage: python benchmarks/bench_transformer.py [--size small] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from facemogle.model import FaceMoGLEModel, StepRandomness, config_for_size
from facemogle.pipeline import FaceMoGLEPipeline
from facemogle.precision import bf16_is_fast


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a square matmul, best of `repeats`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def linear_flops(run) -> int:
    """Forward FLOPs spent in every nn.Linear that runs during run() — the text encoder's too, since the
    profiler's GEMM time they are divided by counts them."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += 2 * inputs[0].numel() // module.in_features * module.in_features * module.out_features

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return total


# the linear layers' GEMMs, eager and as torch.compile's CPU kernels call them
GEMM_OPS = ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise", "mkl::_mkl_linear")


def op_seconds(run) -> tuple[float, float]:
    """Seconds spent in the linear layers' GEMMs (aten::mm/addmm) and in attention, from the profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    gemm = attention = 0.0
    for event in prof.key_averages():
        if event.key in GEMM_OPS:
            gemm += event.self_cpu_time_total / 1e6
        elif "scaled_dot_product" in event.key:
            attention += event.self_cpu_time_total / 1e6
    return gemm, attention


def training_step(model, optimizer, batch, bf16: bool):
    images, labels, text, null = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model.loss(
            images,
            labels,
            text,
            null,
            StepRandomness.draw(0, 0, len(images), model.token_shape(images.shape[-1])),
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    torch.manual_seed(0)
    pipe = FaceMoGLEPipeline(FaceMoGLEModel(config_for_size(args.size)))
    model, config = pipe.model, pipe.config
    res = config.resolution
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"compact model '{args.size}': {params:.1f} M parameters, {res}² pixels, {(res // config.patch_size) ** 2} "
          f"image tokens, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    peak = {
        name: gemm_peak(dtype) for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    }
    print(
        f"GEMM peak (2048³): float32 {peak['float32']:.0f} GFLOP/s, bfloat16 {peak['bfloat16']:.0f} GFLOP/s\n"
    )

    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 19, (args.batch, res, res)), dtype=torch.long)
    images = torch.rand(args.batch, 3, res, res) * 2 - 1
    text = pipe.text_encoder.encode(["She has wavy blond hair and is smiling."] * args.batch)
    batch = (images, labels, text, pipe.text_encoder.encode([""]))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flops = 3 * linear_flops(lambda: training_step(model, optimizer, batch, False))  # fwd + 2× bwd
    print("| training step | images/s | linear GFLOP/s (whole step) | linear GFLOP/s (in GEMMs) "
          "| share of same-dtype GEMM peak | attention share of step |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rates = {}
    for name, bf16 in (("float32", False), ("bfloat16 autocast", True)):
        training_step(model, optimizer, batch, bf16)
        seconds = min(
            _timed(lambda bf16=bf16: training_step(model, optimizer, batch, bf16))
            for _ in range(args.repeats)
        )
        gemm_seconds, attention_seconds = op_seconds(
            lambda bf16=bf16: training_step(model, optimizer, batch, bf16)
        )
        rates[name] = args.batch / seconds
        in_gemm = flops / gemm_seconds / 1e9
        dtype = "bfloat16" if bf16 else "float32"
        print(f"| {name} | {rates[name]:.1f} | {flops / seconds / 1e9:.0f} | {in_gemm:.0f} | "
              f"{in_gemm / peak[dtype]:.0%} | {attention_seconds / seconds:.0%} |")  # fmt: skip
    native = bf16_is_fast("cpu")
    print(f"bfloat16 / float32 training throughput: {rates['bfloat16 autocast'] / rates['float32']:.2f}× "
          f"(native bfloat16 on this CPU: {native}, so 'auto' picks {'bfloat16' if native else 'float32'})\n")  # fmt: skip

    model.eval()
    mask = labels[0].numpy().astype(np.uint8)
    print(
        f"| sampling ({args.steps} steps, text + mask guidance) | batch | seconds per call | seconds per image |"
    )
    print("|---|---|---|---|")
    latency = {}
    for name, bf16 in (("float32", False), ("bfloat16 autocast", True)):
        for n in (1, 16):

            def call(n=n, bf16=bf16):
                return pipe(prompt="a smiling woman", mask=mask, num_inference_steps=args.steps, num_images=n,
                            text_guidance=2.0, mask_guidance=1.5, autocast=bf16)  # fmt: skip

            call()
            seconds = min(_timed(call) for _ in range(args.repeats))
            latency[(name, n)] = seconds
            print(f"| {name} | {n} | {seconds:.2f} | {seconds / n:.3f} |")
    speedup = latency[("float32", 1)] / latency[("bfloat16 autocast", 1)]
    print(f"bfloat16 / float32 sampling speed, batch 1: {speedup:.2f}×\n")
    default_calls(args.repeats, peak, native)


DEFAULT_CALL_MODELS = {  # the same architecture as each shipped default; speed does not depend on the weights
    "v1: 64², 4×4 patches": dict(),
    "v2: 128², 8×8 patches, pixel head": dict(resolution=128, patch_size=8, pixel_head=32),
}


def default_sampling(overrides: dict) -> dict:
    """The shipped default model's sampling defaults where it has this shape (v2's, once the sampling curve
    chose them), else the library's."""
    import json

    from facemogle.pipeline import default_model_folder

    shipped = json.loads((default_model_folder() / "config.json").read_text())
    same = all(shipped.get(k, v) == v for k, v in {"resolution": 64, "patch_size": 4, **overrides}.items())
    return shipped.get("sampling", {}) if same else {}


def default_calls(repeats: int, peak: dict, native: bool) -> None:
    """Seconds per image of the default call (the model's sampling defaults, prompt + mask, dtype `auto`) for
    each default model's shape, eager and under torch.compile, with the sampling GEMMs' share of the peak."""
    dtype = "bfloat16" if native else "float32"
    print(f"| default call (prompt + mask, the model's sampling defaults, {dtype}) | compiled | seconds per image "
          f"| linear GFLOP/s in GEMMs | share of the {dtype} GEMM peak |")  # fmt: skip
    print("|---|---|---|---|---|")
    seconds = {}
    for name, overrides in DEFAULT_CALL_MODELS.items():
        torch.manual_seed(0)
        pipe = FaceMoGLEPipeline(
            FaceMoGLEModel(config_for_size("small", **overrides, sampling=default_sampling(overrides)))
        )
        size = pipe.config.resolution
        mask = np.random.default_rng(0).integers(0, 19, (size, size)).astype(np.uint8)

        def call(pipe=pipe, mask=mask):
            return pipe(prompt="a smiling woman", mask=mask)

        call()  # the text encoder's and other caches warm, as in the timed calls
        flops = linear_flops(call)  # counted eagerly: the same layers run compiled
        for compiled in (False, True):
            if compiled:
                pipe.compile()
            call()  # warm-up (and compilation)
            seconds[(name, compiled)] = min(_timed(call) for _ in range(repeats))
            gemm_seconds, _ = op_seconds(call)
            rate = flops / gemm_seconds / 1e9
            print(
                f"| {name} | {compiled} | {seconds[(name, compiled)]:.3f} | {rate:.0f} | {rate / peak[dtype]:.0%} |"
            )
    v1, v2 = DEFAULT_CALL_MODELS
    print(f"v2 / v1 seconds per image (eager): {seconds[(v2, False)] / seconds[(v1, False)]:.2f}×; "
          f"torch.compile speed-up: v1 {seconds[(v1, False)] / seconds[(v1, True)]:.2f}×, "
          f"v2 {seconds[(v2, False)] / seconds[(v2, True)]:.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
