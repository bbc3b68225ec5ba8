"""MoGLE at the released shape (B=4, 20×1024×64): batched experts vs a per-expert loop, same run.

Backward passes compute gradients of MoGLE's parameters and of the noisy tokens; the condition tokens
need none (they come from a frozen encoder). Times are the best of --repeats calls, the loop's and the
batched module's calls interleaved so that both see the same machine load.

Usage: python benchmarks/bench_mogle.py [--batch 4] [--tokens 1024] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from facemogle.mogle import MoGLE, MoGLEConfig


class LoopMoGLE(nn.Module):
    """The authors' formulation: one nn.Linear MLP per expert in a Python loop, outputs stacked."""

    def __init__(self, module: MoGLE):
        super().__init__()
        self.gate = module.gate
        self.experts = nn.ModuleList()
        for e in range(module.config.num_experts):
            first, second = nn.Linear(*module.w1[e].shape), nn.Linear(*module.w2[e].shape)
            with torch.no_grad():
                first.weight.copy_(module.w1[e].t())
                first.bias.copy_(module.b1[e])
                second.weight.copy_(module.w2[e].t())
                second.bias.copy_(module.b2[e])
            self.experts.append(nn.Sequential(first, nn.ReLU(), second))

    def forward(self, x, noisy, t):
        weights = self.gate(x[:, 0], noisy, t)  # [B, N, 20]
        outs = torch.stack([expert(x[:, i]) for i, expert in enumerate(self.experts)], dim=1)  # [B, 20, N, C]
        return (outs.permute(0, 2, 1, 3) * weights[..., None]).sum(dim=2)


def call(module, inputs, backward: bool) -> None:
    x, noisy, t = inputs
    noisy = noisy.detach().requires_grad_(backward)
    out = module(x, noisy, t)
    if backward:
        out.float().square().mean().backward()


def best_times(modules, inputs, backward: bool, repeats: int) -> list[float]:
    """Best seconds per call of each module, calls interleaved."""
    best = [float("inf")] * len(modules)
    for _ in range(repeats + 1):
        for i, module in enumerate(modules):
            start = time.perf_counter()
            call(module, inputs, backward)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def peak_memory(impl: str, dtype: str, backward: bool, batch: int, tokens: int) -> float:
    """Peak resident memory (MiB) that one call adds above the inputs, in a fresh process.

    Large blocks are mmapped (MALLOC_MMAP_THRESHOLD_) so that freed memory leaves the resident set,
    and the kernel's peak (VmHWM) is reset just before the call.
    """
    code = (
        "import torch, sys; sys.path.insert(0, %r); import bench_mogle as b; "
        "torch.manual_seed(0); m = b.MoGLE(b.MoGLEConfig()); m = (b.LoopMoGLE(m) if %r == 'loop' else m).to(%s); "
        "x = torch.randn(%d, 20, %d, 64, dtype=%s); n = torch.randn(%d, %d, 64, dtype=%s); t = torch.rand(%d); "
        "torch.set_grad_enabled(%r); rss = lambda key: int([l for l in open('/proc/self/status') "
        "if l.startswith(key)][0].split()[1]); open('/proc/self/clear_refs', 'w').write('5'); "
        "before = rss('VmRSS'); b.call(m, (x, n, t), %r); print((rss('VmHWM') - before) / 1024)"
    ) % (
        str(Path(__file__).parent),
        impl,
        dtype,
        batch,
        tokens,
        dtype,
        batch,
        tokens,
        dtype,
        batch,
        backward,
        backward,
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    batched = MoGLE(MoGLEConfig())
    loop = LoopMoGLE(batched)
    print(
        f"MoGLE, B={args.batch}, 20×{args.tokens}×64, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| dtype | pass | loop ms | batched ms | speed-up | loop peak MiB (RSS) | batched peak MiB (RSS) |")
    print("|---|---|---|---|---|---|---|")
    for dtype_name in ("float32", "bfloat16"):
        dtype = getattr(torch, dtype_name)
        b = batched.to(dtype)
        lp = loop.to(dtype)
        x = torch.randn(args.batch, 20, args.tokens, 64, dtype=dtype)
        noisy = torch.randn(args.batch, args.tokens, 64, dtype=dtype)
        t = torch.rand(args.batch)
        for backward in (False, True):
            inputs = (x, noisy, t)
            with torch.enable_grad() if backward else torch.no_grad():
                loop_s, batched_s = best_times([lp, b], inputs, backward, args.repeats)
            loop_mem, batched_mem = (
                peak_memory(impl, f"torch.{dtype_name}", backward, args.batch, args.tokens)
                for impl in ("loop", "batched")
            )
            name = "fwd+bwd" if backward else "fwd"
            print(
                f"| {dtype_name} | {name} | {loop_s * 1e3:.2f} | {batched_s * 1e3:.2f} | "
                f"{loop_s / batched_s:.2f}× | {loop_mem:.1f} | {batched_mem:.1f} |"
            )


if __name__ == "__main__":
    main()
