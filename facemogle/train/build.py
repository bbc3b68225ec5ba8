"""What a run trains: the model and its frozen text encoder, the weights that learn, their EMA, the optimizer."""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from ..flow import AUTHORS_SAMPLING
from ..model import Denoiser, FaceMoGLEModel
from ..pipeline import load_text_encoder
from ..text import TextEncoder
from .config import RunFolderError, TrainConfig


def build_model(config: TrainConfig, device: torch.device | str) -> tuple[Denoiser, TextEncoder]:
    """The model to train and its frozen text encoder. compact: every weight learns; flux: FLUX.1-dev
    from a local folder, frozen, with the paper's LoRA (gaussian init) and MoGLE learning."""
    torch.manual_seed(config.seed)
    if config.backend == "compact":
        model = FaceMoGLEModel(config.model_config())
        return model.to(device), load_text_encoder(model.config)
    if config.backend != "flux":
        raise ValueError(f"Unknown backend {config.backend!r}; use 'compact' or 'flux'.")
    from ..flux import FluxMoGLEConfig, load_flux

    if not config.flux:
        raise RunFolderError(
            "--backend flux needs --flux FOLDER: a local FLUX.1-dev folder in the diffusers layout."
        )
    # Trained with mask dropout, the model serves text-only requests without a mask stream; the released
    # weights (no dropout) need the authors' all-background mask instead.
    sampling = dataclasses.replace(
        AUTHORS_SAMPLING, text_only="dropped" if config.drop_mask > 0 else "background"
    )
    flux_config = FluxMoGLEConfig(flux_folder=config.flux, resolution=config.resolution, lora_rank=config.lora_rank,
                                  lora_alpha=config.lora_rank, mogle=config.mogle_config(), sampling=sampling)  # fmt: skip
    model, text_encoder = load_flux(config.flux, config=flux_config, dtype=config.dtype, device=device)
    model.add_lora("gaussian")
    model.requires_grad_(False)
    for param in model.trainable_parameters():
        param.data = param.data.float()  # frozen weights in bf16, learning ones in float32
        param.requires_grad_(True)
    model.transformer.gradient_checkpointing = config.gradient_checkpointing
    return model, text_encoder


def trainable_state(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that learn, by name (all of them at compact scale; LoRA + MoGLE at full scale)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def update_ema(ema: dict, model: torch.nn.Module, decay: float, step: int) -> None:
    decay = min(decay, (1 + step) / (10 + step))
    for name, value in trainable_state(model).items():
        ema[name].mul_(decay).add_(value.detach().float(), alpha=1 - decay)


@contextlib.contextmanager
def ema_weights(model: torch.nn.Module, ema: dict):
    """Within the block the model holds its EMA weights; the training weights come back afterwards."""
    params = trainable_state(model)
    saved = {name: p.detach().clone() for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(ema[name])
        try:
            yield model
        finally:
            for name, p in params.items():
                p.copy_(saved[name])


def build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise ValueError(
                "optimizer 'prodigy' needs the prodigyopt package: pip install 'facemogle[train]'."
            ) from None
        return Prodigy(
            params,
            lr=1.0,
            weight_decay=config.weight_decay or 0.01,
            use_bias_correction=True,
            safeguard_warmup=True,
        )
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'adamw' or 'prodigy'.")
