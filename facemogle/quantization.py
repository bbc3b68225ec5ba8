"""Quantized loading of the full scale's two large parts, the FLUX transformer and T5: the options and
their diffusers / transformers quantization configs. Importing this module loads neither library."""

from __future__ import annotations

import importlib.util

import torch

# name → (the backend package, what it targets)
QUANTIZATIONS = {
    "int8": ("torchao", "int8 weight-only, CPU and GPU: about half the bf16 weights' memory"),
    "float8": ("torchao", "float8 weight-only, GPUs of compute capability ≥ 8.9 (Ada, Hopper)"),
    "nf4": ("bitsandbytes", "4-bit NF4 (QLoRA's), CUDA only: about a quarter of the bf16 weights' memory"),
}


class QuantizationError(ValueError):
    """A quantization option that cannot be used here; the message says what to install or choose."""


def quantization_configs(name: str, dtype: torch.dtype, device: str | torch.device):
    """diffusers' and transformers' quantization_config for the transformer and for T5."""
    if name not in QUANTIZATIONS:
        raise QuantizationError(f"Unknown quantization {name!r}; choose one of {sorted(QUANTIZATIONS)}.")
    package, _ = QUANTIZATIONS[name]
    if name == "nf4" and torch.device(device).type != "cuda":
        raise QuantizationError("nf4 (bitsandbytes) runs on CUDA only; use --quantize int8 on this device.")
    if importlib.util.find_spec(package) is None:
        raise QuantizationError(f"--quantize {name} needs the {package} package: pip install {package}.")
    if name == "nf4":
        import diffusers
        import transformers

        options = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return diffusers.BitsAndBytesConfig(**options), transformers.BitsAndBytesConfig(**options)
    import diffusers
    import transformers
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    scheme = Int8WeightOnlyConfig() if name == "int8" else Float8WeightOnlyConfig()
    return diffusers.TorchAoConfig(scheme), transformers.TorchAoConfig(quant_type=scheme)
