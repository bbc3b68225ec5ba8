"""The options of a training run (saved as train_config.json in its run folder) and the error for a run
folder or options that cannot be used as asked."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from ..errors import FaceMoGLEError
from ..io import read_options
from ..model import FaceMoGLEConfig, config_for_size
from ..mogle import MoGLEConfig


class RunFolderError(FaceMoGLEError, RuntimeError):
    """A run folder that cannot be used as asked; the message says which flag to pass."""


@dataclass
class TrainConfig:
    """A training run; saved as train_config.json in the run folder. The CLI overrides fields."""

    data: str = "data/synthface"
    out: str = "runs/default"
    backend: str = "compact"  # compact: the small model, all weights learn | flux: FLUX.1-dev + LoRA + MoGLE
    flux: str | None = None  # flux backend: a local FLUX.1-dev folder in the diffusers layout
    lora_rank: int = 4  # flux backend: LoRA rank (alpha = rank, as the paper)
    gradient_checkpointing: bool = False
    condition_cache: str | None = None  # precomputed mask encodings; flux default: <out>/condition_cache
    text_cache: bool = False  # encode each distinct caption once into <out>/text_cache (T5: ≈ 4 MB each)
    size: str = "small"  # compact model preset, see model.SIZES
    resolution: int = 64
    patch_size: int | None = None  # compact: pixels per token side; None: the preset's (4 at "small")
    prediction: str | None = None  # compact: velocity | x (x-prediction, velocity loss); None: the preset's
    pixel_head: int = 0  # compact: hidden channels of a residual 3×3-convolution head in pixels (0: none)
    time_shift: float = 1.0  # training times t' = s·t / (1 + (s − 1)·t) of logit-normal t; 1: unwarped
    gating: str = "dynamic"  # MoGLE ablations: dynamic | static | scalar | none
    experts: bool = True
    local_experts: bool = True  # False: the global expert alone (ablation)
    global_expert: bool = True  # False: the 19 local experts alone (ablation)
    batch_size: int = 16  # per process
    grad_accum: int = 1
    steps: int = 10000
    lr: float = 3e-4
    warmup: int = 500
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adamw | prodigy
    grad_clip: float = 1.0
    ema: float = 0.999
    mixed_precision: str = "auto"  # auto (bf16 where the device runs it fast) | bf16 | no
    seed: int = 0
    drop_text: float = 0.1
    drop_mask: float = 0.1
    drop_local: float = 0.1
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 2  # at least 1: the latest is what --resume and export read
    cache_in_memory: bool = True  # keep decoded faces and masks in memory (compact backend only)
    # compact: start from a model folder's weights (and as its EMA) instead of random ones, at step
    # start_step of the data order, noise draws and EMA decay: a run continued in stages from exported
    # weights when its checkpoints cannot be kept (the optimizer's moments start afresh, with --warmup)
    init_from: str | None = None
    start_step: int = 0

    def __post_init__(self):
        if self.keep_checkpoints < 1:
            raise ValueError(
                "--keep-checkpoints must be at least 1 (--resume and export read the latest checkpoint), "
                f"got {self.keep_checkpoints}."
            )
        if self.time_shift <= 0:
            raise ValueError(f"--time-shift must be positive (1: times unwarped), got {self.time_shift}.")
        if self.pixel_head < 0:
            raise ValueError(f"--pixel-head is a number of channels (0: no head), got {self.pixel_head}.")
        compact_only = [f"--{name.replace('_', '-')}" for name in ("patch_size", "prediction", "pixel_head", "init_from")
                        if getattr(self, name)]  # fmt: skip
        if self.backend == "flux" and compact_only:
            raise ValueError(
                f"{', '.join(compact_only)} apply to the compact backend; FLUX keeps its own patches and "
                "prediction and starts from its own weights: leave them out of the config and flags."
            )
        if self.start_step and not self.init_from:
            raise ValueError(
                "--start-step continues a run from exported weights; pass --init-from MODEL_FOLDER with it."
            )
        if self.start_step < 0:
            raise ValueError(f"--start-step must be at least 0, got {self.start_step}.")
        if self.start_step >= self.steps:
            raise ValueError(
                f"--steps ({self.steps}) must be above --start-step ({self.start_step}): this stage of the run "
                f"starts at step {self.start_step} (its --init-from weights') and trains to --steps."
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a JSON or YAML config file."""
        data = read_options(path)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}.")
        wrong = [
            f"{name}: {value!r}" for name, value in data.items() if not _fits(fields[name].default, value)
        ]
        if wrong:
            raise ValueError(
                f"{path}: options of the wrong type ({', '.join(wrong)}); e.g. write true or false."
            )
        return cls(**data)

    def model_config(self) -> FaceMoGLEConfig:
        overrides = {"patch_size": self.patch_size} if self.patch_size else {}
        if self.prediction:
            overrides["prediction"] = self.prediction
        if self.pixel_head:
            overrides["pixel_head"] = self.pixel_head
        config = config_for_size(self.size, resolution=self.resolution, **overrides)
        config.mogle = self.mogle_config(config.mogle)
        return config

    def mogle_config(self, base: MoGLEConfig | None = None) -> MoGLEConfig:
        """The MoGLE ablation switches of this run applied to `base` (default sizes when None)."""
        base = base or MoGLEConfig()
        if not (self.local_experts or self.global_expert):
            raise ValueError(
                "--local-experts false and --global-expert false leave no expert; for the ablation without "
                "experts pass --experts false."
            )
        num_experts = (base.num_experts - 1) * self.local_experts + self.global_expert
        return dataclasses.replace(base, gating=self.gating, experts=self.experts, num_experts=num_experts,
                                   global_expert=self.global_expert)  # fmt: skip

    @property
    def dtype(self) -> torch.dtype:
        """Frozen full-scale weights and cached conditions: bfloat16 under bf16 mixed precision."""
        return torch.bfloat16 if self.mixed_precision == "bf16" else torch.float32


def _fits(default, value) -> bool:
    """Whether a config file's value has the type of the field's default (a typo like `flase` is a string,
    which would read as true); options whose default is None take anything."""
    if default is None or default is dataclasses.MISSING:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (isinstance(default, float) or float(value).is_integer())
        )
    return isinstance(value, type(default))
