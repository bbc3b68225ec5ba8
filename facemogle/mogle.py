"""MoGLE: a mixture of one global and 19 local experts, fused per token by a dynamic gating network.

Time convention: the gate receives the diffusion time t ∈ [0, 1] (t = 1 is pure noise), as in the
authors' training. Their sampler fed it the scheduler's t × 1000; `time_scale=1000` reproduces that
when running their released checkpoint.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

GatingMode = Literal["dynamic", "static", "scalar", "none"]


@dataclass
class MoGLEConfig:
    """Sizes and ablation switches. The released checkpoint: 20 experts, 64 → 32 → 64."""

    num_experts: int = 20  # 1 global + 19 local; 1: the global expert alone (the "no local experts" ablation)
    global_expert: bool = True  # False: the 19 local experts alone (the "no global expert" ablation)
    token_dim: int = 64
    hidden_dim: int = 32  # experts' hidden width; the gate works at token_dim (global tokens are added in)
    time_features: int = 64
    experts: bool = True  # False: identity experts (the "no experts" ablation)
    gating: GatingMode = "dynamic"  # static: no t/x_t; scalar: token-averaged weights; none: plain sum
    time_scale: float = 1.0  # multiply t before the gate's sinusoidal features (1000 = authors' sampler)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t [B] → [B, dim]: cos first, frequencies exp(-ln(1e4)·i/(dim/2)), no shift."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class DynamicGate(nn.Module):
    """Per-token softmax weights over the experts from the global map, the noisy latent and t."""

    def __init__(self, config: MoGLEConfig):
        super().__init__()
        c = g = config.token_dim
        self.config = config
        self.time_embed = nn.Sequential(nn.Linear(config.time_features, g), nn.SiLU(), nn.Linear(g, g))
        self.noise_proj = nn.Linear(c, g)
        self.gate = nn.Sequential(nn.Linear(g, g), nn.ReLU(), nn.Linear(g, config.num_experts))

    def forward(
        self, global_tokens: torch.Tensor, noisy_tokens: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """global_tokens, noisy_tokens [B, N, C], t [B] → weights [B, N, E]."""
        fused = global_tokens
        if self.config.gating != "static":
            features = timestep_features(t * self.config.time_scale, self.config.time_features)
            time_emb = self.time_embed(features.to(global_tokens.dtype))  # [B, G]
            fused = fused + self.noise_proj(noisy_tokens) + time_emb[:, None]
        weights = self.gate(fused).softmax(dim=-1)
        if self.config.gating == "scalar":
            weights = weights.mean(dim=1, keepdim=True).expand_as(weights)
        return weights


class MoGLE(nn.Module):
    """Global + local experts with dynamic gating: [B, 20, N, C] condition tokens → [B, N, C].

    The experts are stacked into two weight tensors and run as one batched matmul; the per-token
    weighted sum is folded into the experts' second layer, so the [B, 20, N, C] expert outputs are
    never materialised. Expert hidden states depend on the mask alone: `expert_hidden` can be
    computed once per image and `mix` re-run at each sampling step.
    """

    def __init__(self, config: MoGLEConfig | None = None):
        super().__init__()
        self.config = config = config or MoGLEConfig()
        e, c, h = config.num_experts, config.token_dim, config.hidden_dim
        if config.experts:
            self.w1 = nn.Parameter(torch.empty(e, c, h))
            self.b1 = nn.Parameter(torch.empty(e, h))
            self.w2 = nn.Parameter(torch.empty(e, h, c))
            self.b2 = nn.Parameter(torch.empty(e, c))
            self._init_experts()
        self.gate = DynamicGate(config) if config.gating != "none" else None

    def _init_experts(self) -> None:
        """nn.Linear's default initialisation, expert by expert."""
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(
        self, condition_tokens: torch.Tensor, noisy_tokens: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """condition_tokens [B, 20, N, C] (global first), noisy_tokens [B, N, C], t [B] → [B, N, C]."""
        return self.mix(self.expert_hidden(condition_tokens), condition_tokens[:, 0], noisy_tokens, t)

    def expert_hidden(self, condition_tokens: torch.Tensor) -> torch.Tensor:
        """First expert layer: [B, 20, N, C] → [B, E, N, H] (identity experts: the tokens themselves)."""
        first = 0 if self.config.global_expert else 1  # the global map's tokens come first
        condition_tokens = condition_tokens[:, first : first + self.config.num_experts]  # [B, E, N, C]
        if not self.config.experts:
            return condition_tokens
        hidden = torch.matmul(condition_tokens, self.w1.to(condition_tokens.dtype))  # one batched matmul
        return hidden.add_(self.b1.to(hidden.dtype)[:, None]).relu_()

    def mix(
        self, hidden: torch.Tensor, global_tokens: torch.Tensor, noisy_tokens: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Gate, then the weighted sum of expert outputs: hidden [B, E, N, H] → condition tokens [B, N, C]."""
        weights = self.gate_weights(global_tokens, noisy_tokens, t).to(hidden.dtype)  # [B, N, E]
        if not self.config.experts:
            return torch.einsum("bne,benc->bnc", weights, hidden)
        b, e, n, h = hidden.shape
        weighted = weights.unsqueeze(-1) * hidden.permute(0, 2, 1, 3)  # [B, N, E, H], contiguous
        w2 = self.w2.to(hidden.dtype).reshape(e * h, -1)  # [E*H, C]: the weighted sum folded into layer 2
        bias = weights.reshape(b * n, e) @ self.b2.to(hidden.dtype)  # [B*N, C]
        return torch.addmm(bias, weighted.reshape(b * n, e * h), w2).view(b, n, -1)

    def gate_weights(
        self, global_tokens: torch.Tensor, noisy_tokens: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Per-token expert weights [B, N, E]; uniform ones (a plain sum) when gating is off."""
        if self.gate is None:
            b, n, _ = global_tokens.shape
            return global_tokens.new_ones(b, n, self.config.num_experts)
        return self.gate(global_tokens, noisy_tokens, t)

    # --- the authors' released state-dict layout (global_local_mask_moe.pt) ---

    @classmethod
    def from_official(cls, state_dict: dict | str | os.PathLike, **overrides) -> MoGLE:
        """Build a MoGLE from the authors' state dict (or the path of their .pt file)."""
        if not isinstance(state_dict, dict):
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        config = MoGLEConfig(**{**_config_from_official(state_dict), **overrides})
        module = cls(config)
        missing = set(module.official_keys()) - set(state_dict)
        unexpected = set(state_dict) - set(module.official_keys())
        if missing or unexpected:
            raise KeyError(
                f"Not a MoGLE state dict in the released layout: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}."
            )
        module.load_state_dict(_official_to_native(state_dict, config))
        return module

    def to_official(self) -> dict[str, torch.Tensor]:
        """This module's weights in the authors' key layout (nn.Linear [out, in] weights)."""
        out: dict[str, torch.Tensor] = {}
        if self.config.experts:
            names = ["global_expert"] * self.config.global_expert + [
                f"local_experts.{k}" for k in range(self.config.num_experts - self.config.global_expert)
            ]
            for i, name in enumerate(names):
                out[f"{name}.net.0.weight"] = self.w1[i].detach().t().contiguous()
                out[f"{name}.net.0.bias"] = self.b1[i].detach().clone()
                out[f"{name}.net.2.weight"] = self.w2[i].detach().t().contiguous()
                out[f"{name}.net.2.bias"] = self.b2[i].detach().clone()
        if self.gate is not None:
            for native, official in _GATE_KEYS.items():
                out[official] = self.state_dict()[native].detach().clone()
        return out

    def official_keys(self) -> list[str]:
        return list(self.to_official())


_GATE_KEYS = {
    "gate.time_embed.0.weight": "gating.timestep_embedding.linear_1.weight",
    "gate.time_embed.0.bias": "gating.timestep_embedding.linear_1.bias",
    "gate.time_embed.2.weight": "gating.timestep_embedding.linear_2.weight",
    "gate.time_embed.2.bias": "gating.timestep_embedding.linear_2.bias",
    "gate.noise_proj.weight": "gating.noise_proj.weight",
    "gate.noise_proj.bias": "gating.noise_proj.bias",
    "gate.gate.0.weight": "gating.gate.0.weight",
    "gate.gate.0.bias": "gating.gate.0.bias",
    "gate.gate.2.weight": "gating.gate.2.weight",
    "gate.gate.2.bias": "gating.gate.2.bias",
}


def _config_from_official(state_dict: dict) -> dict:
    """Infer sizes and ablation switches from the keys and shapes of a released state dict."""
    first = next(
        (k for k in ("global_expert.net.0.weight", "local_experts.0.net.0.weight") if k in state_dict), None
    )
    config: dict = {"experts": first is not None, "global_expert": "global_expert.net.0.weight" in state_dict}
    if config["experts"]:
        hidden, token = state_dict[first].shape
        locals_ = {k.split(".")[1] for k in state_dict if k.startswith("local_experts.")}
        config.update(hidden_dim=hidden, token_dim=token, num_experts=len(locals_) + config["global_expert"])
    else:
        config["global_expert"] = True
    if "gating.gate.2.weight" in state_dict:
        config["num_experts"] = state_dict["gating.gate.2.weight"].shape[0]
        config["time_features"] = state_dict["gating.timestep_embedding.linear_1.weight"].shape[1]
        config["token_dim"] = state_dict["gating.noise_proj.weight"].shape[1]
    else:
        config["gating"] = "none"
    return config


def _official_to_native(state_dict: dict, config: MoGLEConfig) -> dict[str, torch.Tensor]:
    native: dict[str, torch.Tensor] = {}
    if config.experts:
        names = ["global_expert"] * config.global_expert + [
            f"local_experts.{k}" for k in range(config.num_experts - config.global_expert)
        ]
        native["w1"] = torch.stack([state_dict[f"{n}.net.0.weight"].float().t() for n in names])
        native["b1"] = torch.stack([state_dict[f"{n}.net.0.bias"].float() for n in names])
        native["w2"] = torch.stack([state_dict[f"{n}.net.2.weight"].float().t() for n in names])
        native["b2"] = torch.stack([state_dict[f"{n}.net.2.bias"].float() for n in names])
    if config.gating != "none":
        native.update({k: state_dict[v].float() for k, v in _GATE_KEYS.items()})
    return native
