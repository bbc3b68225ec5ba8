"""Whether bfloat16 autocast pays on a device.

On CPUs with native bfloat16 (AVX512-BF16 or AMX) bfloat16 matmuls run several times faster than
float32; on CPUs without it they are emulated and run about 3× slower. "auto" picks accordingly.
"""

from __future__ import annotations

import torch


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True on CUDA GPUs that support bfloat16 and on CPUs with AVX512-BF16 or AMX-BF16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def resolve_mixed_precision(mixed_precision: str, device: torch.device | str) -> str:
    """'auto' → 'bf16' where bfloat16 is fast on the device, else 'no'; 'bf16' and 'no' stay."""
    if mixed_precision not in ("auto", "bf16", "no"):
        raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {mixed_precision!r}.")
    if mixed_precision == "auto":
        return "bf16" if bf16_is_fast(device) else "no"
    return mixed_precision
