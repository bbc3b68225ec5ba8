"""Rectified flow: training time samples, the velocity target, modality dropout, time grids, samplers, guidance.

Time convention, everywhere in facemogle (transformer, MoGLE gate, sampler): t ∈ [0, 1], t = 0 is the
clean image, t = 1 pure noise; x_t = (1 − t)·x0 + t·ε, and the model predicts the velocity ε − x0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# The sampler's default guidance scales. Text guidance trades attribute accuracy against realism (MODEL_CARD.md).
TEXT_GUIDANCE = 4.0
MASK_GUIDANCE = 1.5


def sample_time(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Logit-normal training times: t = sigmoid(n), n ~ N(0, 1)."""
    return torch.sigmoid(torch.randn(batch, generator=generator, device=device))


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
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def sample_ode(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    grid: torch.Tensor,
    method: str = "euler",
    progress: Callable | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t = grid[0] (noise) to grid[-1]; Euler, or Heun's second order."""
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
        x = x_next
    return x


def guidance_branches(
    has_text: bool, has_mask: bool, text_scale: float, mask_scale: float
) -> list[tuple[bool, bool]]:
    """The (text, mask) branches a guided prediction needs, full condition first; scale 1 needs no extra branch."""
    branches = [(has_text, has_mask)]
    if has_mask and mask_scale != 1.0:
        branches.append((False, False))
    if has_text and text_scale != 1.0:
        branches.append((False, has_mask))
    return list(dict.fromkeys(branches))


def combine_guidance(
    predictions: dict[tuple[bool, bool], torch.Tensor],
    has_text: bool,
    has_mask: bool,
    text_scale: float,
    mask_scale: float,
) -> torch.Tensor:
    """Compositional classifier-free guidance with separate scales:
    v = v(∅) + s_mask·(v(mask) − v(∅)) + s_text·(v(text, mask) − v(mask)), reduced to the branches present."""
    full = predictions[(has_text, has_mask)]
    without_text = predictions.get((False, has_mask), full)
    unconditional = predictions.get((False, False), without_text)
    v = without_text
    if has_mask:
        v = unconditional + mask_scale * (without_text - unconditional)
    if has_text:
        v = v + text_scale * (full - without_text)
    return v
