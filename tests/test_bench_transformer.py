import sys

import pytest
import torch
from conftest import benchmark
from torch import nn


def load():
    return benchmark("bench_transformer")


def test_linear_flops_counts_every_linear_layer_that_runs():
    bench = load()
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(3, 5, 8)  # 15 rows
    assert bench.linear_flops(lambda: net(x)) == 2 * 15 * (8 * 16 + 16 * 4)
    assert bench.linear_flops(lambda: net[2](torch.randn(2, 16))) == 2 * 2 * 16 * 4


def test_the_gemm_time_is_found_in_the_profile():
    bench = load()
    a = torch.randn(256, 256)
    gemm, attention = bench.op_seconds(lambda: torch.nn.functional.linear(a, a))
    assert gemm > 0 and attention == 0


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end(monkeypatch, capsys):
    bench = load()
    monkeypatch.setattr(
        sys, "argv", ["bench_transformer.py", "--batch", "2", "--repeats", "1", "--steps", "2"]
    )
    bench.main()
    out = capsys.readouterr().out
    assert "| float32 | " in out and "torch.compile speed-up" in out
    assert "v2: 128², 8×8 patches, pixel head" in out
