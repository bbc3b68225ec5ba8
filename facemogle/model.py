"""The compact Face-MoGLE denoiser: pixel-space tokens, MoGLE condition tokens, a small FLUX transformer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .flow import ModalityDropout, noisy_sample, sample_time, velocity_target
from .labels import NUM_CLASSES
from .latents import encode_masks, patchify
from .mogle import MoGLE, MoGLEConfig
from .text import TextEmbedding
from .transformer import AttentionOptions, ConditionedFlux, image_ids, text_ids


@dataclass
class FaceMoGLEConfig:
    """Everything needed to rebuild the compact model; saved as config.json beside its weights."""

    resolution: int = 64
    patch_size: int = 4
    num_layers: int = 2  # double-stream blocks
    num_single_layers: int = 4
    num_heads: int = 4
    head_dim: int = 64
    text_encoder: str = "minilm"
    max_text_tokens: int = 48
    text_dim: int = 384
    pooled_dim: int = 384
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)

    def __post_init__(self):
        if isinstance(self.mogle, dict):
            self.mogle = MoGLEConfig(**self.mogle)
        if self.resolution % self.patch_size:
            raise ValueError(
                f"resolution {self.resolution} is not a multiple of patch_size {self.patch_size}."
            )
        self.mogle.token_dim = self.token_dim

    @property
    def token_dim(self) -> int:
        return 3 * self.patch_size**2

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        """Rotary dims per position axis (unused, row, column); even, summing to head_dim."""
        side = (self.head_dim - max(2, self.head_dim // 4)) // 4 * 2
        return self.head_dim - 2 * side, side, side

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FaceMoGLEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown config fields {sorted(unknown)}; was this config written by a newer facemogle?"
            )
        return cls(**data)


SIZES = {
    "tiny": dict(resolution=32, patch_size=4, num_layers=1, num_single_layers=1, num_heads=2, head_dim=16,
                 mogle=MoGLEConfig(hidden_dim=16)),
    "small": dict(resolution=64, patch_size=4, num_layers=2, num_single_layers=4, num_heads=4, head_dim=64),
}  # fmt: skip


def config_for_size(size: str, **overrides) -> FaceMoGLEConfig:
    if size not in SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {sorted(SIZES)}.")
    preset = {
        k: (MoGLEConfig(**asdict(v)) if isinstance(v, MoGLEConfig) else v) for k, v in SIZES[size].items()
    }
    return FaceMoGLEConfig(**{**preset, **overrides})


@dataclass
class MaskCondition:
    """A mask, encoded once per image: MoGLE's expert hidden states and the global map's tokens."""

    hidden: torch.Tensor  # [B, 20, N, H]
    global_tokens: torch.Tensor  # [B, N, C]

    def repeat(self, n: int) -> MaskCondition:
        return MaskCondition(self.hidden.repeat(n, 1, 1, 1), self.global_tokens.repeat(n, 1, 1))


class FaceMoGLEModel(nn.Module):
    """Velocity prediction v(x_t, t | text, mask) for image tokens of a `resolution`² RGB image."""

    def __init__(self, config: FaceMoGLEConfig):
        super().__init__()
        from diffusers import FluxTransformer2DModel

        self.config = config
        flux = FluxTransformer2DModel(
            patch_size=1,
            in_channels=config.token_dim,
            num_layers=config.num_layers,
            num_single_layers=config.num_single_layers,
            attention_head_dim=config.head_dim,
            num_attention_heads=config.num_heads,
            joint_attention_dim=config.text_dim,
            pooled_projection_dim=config.pooled_dim,
            guidance_embeds=False,
            axes_dims_rope=config.rope_axes,
        )
        self.transformer = ConditionedFlux(flux)
        self.mogle = MoGLE(config.mogle)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(
                f"Height and width must be multiples of the patch size {p}, got {height}×{width}."
            )
        return height // p, width // p

    def encode_condition(self, labels: torch.Tensor, local_keep: torch.Tensor | None = None) -> MaskCondition:
        """Label maps [B, H, W] → MaskCondition; local_keep [B, 19] zeroes dropped local maps' tokens."""
        tokens = encode_masks(labels, self.config.patch_size).to(self.mogle_dtype)  # [B, 20, N, C]
        if local_keep is not None:
            keep = torch.cat([torch.ones_like(local_keep[:, :1]), local_keep], dim=1)
            tokens = tokens * keep[:, :, None, None].to(tokens.dtype)
        return MaskCondition(self.mogle.expert_hidden(tokens), tokens[:, 0])

    @property
    def mogle_dtype(self) -> torch.dtype:
        return next(self.mogle.parameters()).dtype

    def forward(
        self,
        noisy_tokens: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbedding,
        condition: MaskCondition | None = None,
        condition_present: torch.Tensor | None = None,
        attention: AttentionOptions | None = None,
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """noisy_tokens [B, N, C], t [B] → velocity [B, N, C]; MoGLE is re-run here since its gate sees x_t and t."""
        rows, cols = grid or self.grid(self.config.resolution, self.config.resolution)
        ids = image_ids(rows, cols, noisy_tokens.device)
        condition_tokens = None
        if condition is not None:
            condition_tokens = self.mogle.mix(condition.hidden, condition.global_tokens, noisy_tokens, t)
        return self.transformer(
            noisy_tokens, t, text.tokens, text.pooled, ids, text_ids(text.tokens.shape[1], noisy_tokens.device),
            condition_tokens=condition_tokens, text_mask=text.mask, condition_present=condition_present,
            attention=attention,
        )  # fmt: skip

    def token_shape(self, resolution: int) -> tuple[int, int]:
        rows, cols = self.grid(resolution, resolution)
        return rows * cols, self.config.token_dim

    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        text: TextEmbedding,
        null_text: TextEmbedding,
        randomness: StepRandomness,
    ) -> torch.Tensor:
        """Rectified-flow loss on a batch: images [B, 3, H, W] in [-1, 1], labels [B, H, W], encoded prompts."""
        r = randomness
        x0 = patchify(images, self.config.patch_size)  # [B, N, C]
        condition = self.encode_condition(labels, r.keep_local)
        prediction = self(
            noisy_sample(x0, r.noise, r.t), r.t, text.select(r.keep_text, null_text), condition, r.keep_mask,
            grid=self.grid(*images.shape[-2:]),
        )  # fmt: skip
        return F.mse_loss(prediction.float(), velocity_target(x0, r.noise).float())


@dataclass
class StepRandomness:
    """Every random draw of one training step, for a whole (global) batch."""

    noise: torch.Tensor  # [B, N, C]
    t: torch.Tensor  # [B]
    keep_text: torch.Tensor  # [B] bool
    keep_mask: torch.Tensor  # [B] bool
    keep_local: torch.Tensor  # [B, 19] bool

    @classmethod
    def draw(
        cls,
        seed: int,
        step: int,
        batch: int,
        token_shape: tuple[int, int],
        dropout: ModalityDropout | None = None,
    ) -> StepRandomness:
        """Draws that depend only on (seed, step), so any process can take its slice of the global batch."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        keep_text, keep_mask, keep_local = (dropout or ModalityDropout()).sample(
            batch, NUM_CLASSES, generator
        )
        t = sample_time(batch, generator)
        noise = torch.randn(batch, *token_shape, generator=generator)
        return cls(noise, t, keep_text, keep_mask, keep_local)

    def slice(self, rows: slice) -> StepRandomness:
        return StepRandomness(
            self.noise[rows], self.t[rows], self.keep_text[rows], self.keep_mask[rows], self.keep_local[rows]
        )
