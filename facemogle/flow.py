"""Rectified flow: training time samples, the velocity target, modality dropout, time grids, samplers, guidance.

Time convention, everywhere in facemogle (transformer, MoGLE gate, sampler): t ∈ [0, 1], t = 0 is the
clean image, t = 1 pure noise; x_t = (1 − t)·x0 + t·ε, and the model predicts the velocity ε − x0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# The compact scale's default guidance scales. Text guidance trades attribute accuracy against realism (MODEL_CARD.md).
TEXT_GUIDANCE = 4.0
MASK_GUIDANCE = 1.5
TEXT_ONLY_MODES = ("dropped", "background")


@dataclass
class SamplingDefaults:
    """A model's sampling settings where the caller gives none; saved in its config.json as "sampling"."""

    steps: int = 20
    sampler: str = "euler"  # euler | heun
    text_guidance: float = TEXT_GUIDANCE  # 1: no text guidance branch
    mask_guidance: float = MASK_GUIDANCE  # 1: no mask guidance branch
    # text → face: "dropped" leaves the mask stream out (a model trained with mask dropout);
    # "background" conditions on an all-background mask (the authors' demo; their LoRA never saw no mask)
    text_only: str = "dropped"
    # guidance intervals: each guidance term applies at times lo ≤ t ≤ hi only (t = 1 noise), with scale 1
    # (no extra branch) elsewhere; (0, 1): at every step
    text_interval: tuple[float, float] = (0.0, 1.0)
    mask_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        self.text_interval = _interval(self.text_interval, "text_interval")
        self.mask_interval = _interval(self.mask_interval, "mask_interval")
        if self.text_only not in TEXT_ONLY_MODES:
            raise ValueError(f"text_only must be one of {TEXT_ONLY_MODES}, got {self.text_only!r}.")
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"Unknown sampler {self.sampler!r}; use 'euler' or 'heun'.")

    def override(self, **settings) -> SamplingDefaults:
        """These defaults with the settings a caller gave (those not None) in their place."""
        return dataclasses.replace(self, **{k: v for k, v in settings.items() if v is not None})


def _interval(value, name: str) -> tuple[float, float]:
    """A guidance interval (lo, hi) with 0 ≤ lo ≤ hi ≤ 1 (a JSON config gives a list)."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two times (lo, hi) in [0, 1], got {value!r}.") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"{name} must satisfy 0 ≤ lo ≤ hi ≤ 1, got ({low}, {high}).")
    return low, high


def inside(t: float, interval: tuple[float, float]) -> bool:
    return interval[0] <= t <= interval[1]


# The authors' sampler for FLUX.1-dev + their LoRA: 28 Euler steps, no classifier-free guidance (one
# transformer row per step; FLUX's guidance embedding, 3.5, is the model config's `guidance`).
AUTHORS_SAMPLING = SamplingDefaults(steps=28, text_guidance=1.0, mask_guidance=1.0, text_only="background")


def sample_time(
    batch: int, generator: torch.Generator | None = None, device=None, shift: float = 1.0
) -> torch.Tensor:
    """Logit-normal training times t = sigmoid(n), n ~ N(0, 1), warped by `shift` as `time_grid` warps."""
    return warp_time(torch.sigmoid(torch.randn(batch, generator=generator, device=device)), shift)


def warp_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = shift·t / (1 + (shift − 1)·t): shift > 1 moves times towards noise (SD3's resolution shift)."""
    return shift * t / (1 + (shift - 1) * t)


def noisy_sample(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·x0 + t·ε, t [B] broadcast over the remaining axes."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


@dataclass
class ModalityDropout:
    """Training-time dropout so one model serves mask→face, text→face and text+mask→face."""

    text: float = 0.1  # the prompt becomes the empty prompt
    mask: float = 0.1  # the whole mask stream is absent
    local: float = 0.1  # each local binary map is zeroed; the global map is never dropped

    def sample(self, batch: int, num_local: int, generator: torch.Generator | None = None):
        """Keep flags: text [B], mask [B], local maps [B, num_local] (bool)."""
        u = torch.rand(batch, 2 + num_local, generator=generator)
        return u[:, 0] >= self.text, u[:, 1] >= self.mask, u[:, 2:] >= self.local


def time_shift(num_tokens: int) -> float:
    """FLUX's resolution-dependent shift exp(μ), μ linear in the token count (0.5 at 256, 1.15 at 4096)."""
    mu = 0.5 + (1.15 - 0.5) * (num_tokens - 256) / (4096 - 256)
    return math.exp(mu)


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 times from 1 to 0, warped by t' = shift·t / (1 + (shift − 1)·t) (more steps at high noise)."""
    return warp_time(torch.linspace(1.0, 0.0, steps + 1), shift)


def sample_ode(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    grid: torch.Tensor,
    method: str = "euler",
    progress: Callable | None = None,
    on_step_end: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t = grid[0] (noise) to grid[-1]; Euler, or Heun's second order.

    on_step_end(i, t, x) → x: called after step i (t the step's start time); what it returns goes on."""
    if method not in ("euler", "heun"):
        raise ValueError(f"Unknown sampler {method!r}; use 'euler' or 'heun'.")
    x = noise
    steps = range(len(grid) - 1)
    for i in progress(steps) if progress else steps:
        t, t_next = grid[i], grid[i + 1]
        v = velocity(x, t.expand(x.shape[0]))
        x_next = x + (t_next - t) * v
        if method == "heun" and t_next > 0:
            v_next = velocity(x_next, t_next.expand(x.shape[0]))
            x_next = x + (t_next - t) * (v + v_next) / 2
        x = x_next if on_step_end is None else on_step_end(i, t, x_next)
    return x


def guidance_branches(
    has_text: bool, has_mask: bool, text_scale: float, mask_scale: float
) -> list[tuple[bool, bool]]:
    """The (text, mask) branches a guided prediction needs, full condition first; scale 1 needs no extra branch.

    Mask guidance compares v(mask) with v(∅), so with text present it needs the (no text, mask) branch
    whatever the text scale."""
    branches = [(has_text, has_mask)]
    mask_guided = has_mask and mask_scale != 1.0
    if has_text and (text_scale != 1.0 or mask_guided):
        branches.append((False, has_mask))
    if mask_guided:
        branches.append((False, False))
    return list(dict.fromkeys(branches))


def combine_guidance(
    predictions: dict[tuple[bool, bool], torch.Tensor],
    has_text: bool,
    has_mask: bool,
    text_scale: float,
    mask_scale: float,
) -> torch.Tensor:
    """Compositional classifier-free guidance with separate scales:
    v = v(∅) + s_mask·(v(mask) − v(∅)) + s_text·(v(text, mask) − v(mask)), from the branches that
    `guidance_branches` lists (a term whose scale is 1 needs none of its own)."""
    v = predictions[(has_text, has_mask)]
    if has_text and text_scale != 1.0:
        without_text = predictions[(False, has_mask)]
        v = without_text + text_scale * (v - without_text)
    if has_mask and mask_scale != 1.0:
        without_text = predictions[(False, True)]
        unconditional = predictions[(False, False)]
        v = v + (mask_scale - 1.0) * (without_text - unconditional)
    return v
