"""The compact Face-MoGLE denoiser: pixel-space tokens, MoGLE condition tokens, a small FLUX transformer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .flow import ModalityDropout, SamplingDefaults, noisy_sample, sample_time, velocity_target
from .labels import NUM_CLASSES
from .latents import encode_masks, patchify, unpatchify
from .mogle import MoGLE, MoGLEConfig
from .text import TextEmbedding
from .transformer import AttentionOptions, ConditionedFlux, StepConstants, image_ids, text_ids

PREDICTIONS = ("velocity", "x")
# x-prediction's velocity (x_t − x̂0) / t divides by at least this time (as JiT clips it)
MIN_X_TIME = 0.05


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
    # what the transformer outputs: "velocity" (ε − x0) or "x" (the clean image, turned into a velocity
    # before the loss and the sampler: x-prediction with a velocity loss)
    prediction: str = "velocity"
    # a residual pixel-space head after the transformer (3×3 convolutions over the unpatchified output and
    # x_t, this many hidden channels; 0: none), which can smooth across patch boundaries; zero-initialised
    pixel_head: int = 0
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    def __post_init__(self):
        if isinstance(self.mogle, dict):
            self.mogle = MoGLEConfig(**self.mogle)
        if isinstance(self.sampling, dict):
            self.sampling = SamplingDefaults(**self.sampling)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}.")
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


class Denoiser(nn.Module):
    """Velocity prediction v(x_t, t | text, mask): MoGLE's condition tokens fed to a ConditionedFlux.

    Both scales share this; a subclass says how pixels and masks become tokens (patchify at the
    compact scale, the VAE at full scale) and sets transformer, mogle, resolution, patch_size
    (pixels per token side) and token_dim.
    """

    transformer: ConditionedFlux
    mogle: MoGLE
    resolution: int
    patch_size: int
    token_dim: int
    prediction: str = "velocity"

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → tokens [B, N, C]."""
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """tokens [B, N, C] → images [B, 3, H, W] in [-1, 1]."""
        raise NotImplementedError

    def mask_tokens(self, labels: torch.Tensor, remember: bool = True) -> torch.Tensor:
        """Label maps [B, H, W] → the 20 condition maps' tokens [B, 20, N, C] (global first).

        remember: keep them in the model's in-memory cache of masks, where it has one."""
        raise NotImplementedError

    def refine(
        self, output: torch.Tensor, noisy_tokens: torch.Tensor, grid: tuple[int, int] | None
    ) -> torch.Tensor:
        """The transformer's output tokens [B, N, C] after any head of the model's own (none here)."""
        return output

    def guidance(self, batch: int, device) -> torch.Tensor | None:
        """FLUX's embedded guidance, for transformers that have one."""
        return None

    def grid(self, height: int, width: int) -> tuple[int, int]:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"Height and width must be multiples of {p} pixels, got {height}×{width}.")
        return height // p, width // p

    def token_shape(self, resolution: int) -> tuple[int, int]:
        rows, cols = self.grid(resolution, resolution)
        return rows * cols, self.token_dim

    def encode_condition(
        self,
        labels: torch.Tensor | None = None,
        local_keep: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> MaskCondition:
        """Label maps [B, H, W] (or their precomputed tokens [B, 20, N, C]) → MaskCondition, once per image.

        local_keep [B, 19] zeroes the tokens of dropped local maps (training-time dropout).
        """
        tokens = (self.mask_tokens(labels) if tokens is None else tokens).to(self.mogle_dtype)
        if local_keep is not None:
            keep = torch.cat([torch.ones_like(local_keep[:, :1]), local_keep], dim=1)
            tokens = tokens * keep[:, :, None, None].to(tokens.dtype)
        return MaskCondition(self.mogle.expert_hidden(tokens), tokens[:, 0])

    @property
    def mogle_dtype(self) -> torch.dtype:
        """MoGLE's weights' dtype; float32 for the ablation with neither experts nor gate (no weights)."""
        weight = next(self.mogle.parameters(), None)
        return torch.float32 if weight is None else weight.dtype

    def step_constants(
        self,
        text: TextEmbedding,
        has_condition: bool,
        condition_present: torch.Tensor | None = None,
        attention: AttentionOptions | None = None,
        grid: tuple[int, int] | None = None,
    ) -> StepConstants:
        """What every step of a sampling call shares (text embedding, positions, attention bias)."""
        rows, cols = grid or self.grid(self.resolution, self.resolution)
        device = text.tokens.device
        return self.transformer.prepare(
            text.tokens, text.pooled, image_ids(rows, cols, device), text_ids(text.tokens.shape[1], device),
            rows * cols if has_condition else 0, text_mask=text.mask, condition_present=condition_present,
            guidance=self.guidance(text.tokens.shape[0], device), attention=attention,
        )  # fmt: skip

    def forward(
        self,
        noisy_tokens: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbedding,
        condition: MaskCondition | None = None,
        condition_present: torch.Tensor | None = None,
        attention: AttentionOptions | None = None,
        grid: tuple[int, int] | None = None,
        constants: StepConstants | None = None,
    ) -> torch.Tensor:
        """noisy_tokens [B, N, C], t [B] → velocity [B, N, C]; MoGLE is re-run here since its gate sees x_t and t.

        constants: `step_constants` of the same text, condition flags, attention and grid, built once
        per sampling call; built here when None."""
        if constants is None:
            constants = self.step_constants(text, condition is not None, condition_present, attention, grid)
        condition_tokens = None
        if condition is not None:
            condition_tokens = self.mogle.mix(
                condition.hidden, condition.global_tokens, noisy_tokens.to(self.mogle_dtype), t
            )  # [B, N, C]
        output = self.transformer(
            noisy_tokens, t, text.tokens, text.pooled, None, None, condition_tokens=condition_tokens,
            guidance=self.guidance(noisy_tokens.shape[0], noisy_tokens.device), constants=constants,
        )  # fmt: skip
        output = self.refine(output, noisy_tokens, grid)
        if self.prediction == "velocity":
            return output
        # x-prediction: v = (x_t − x̂0) / t, as x_t = x0 + t·v
        time = t.float().clamp(min=MIN_X_TIME).view(-1, 1, 1)
        return ((noisy_tokens.float() - output.float()) / time).to(output.dtype)

    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        text: TextEmbedding,
        null_text: TextEmbedding,
        randomness: StepRandomness,
        condition_tokens: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rectified-flow loss on a batch: images [B, 3, H, W] in [-1, 1], labels [B, H, W], encoded prompts.

        condition_tokens: the masks' precomputed tokens [B, 20, N, C] (a condition cache), if any;
        image_tokens: the images' precomputed tokens [B, N, C] (the VAE mean, cached beside them), if any.
        """
        r = randomness
        x0 = self.encode_images(images) if image_tokens is None else image_tokens.float()  # [B, N, C]
        condition = self.encode_condition(labels, r.keep_local, tokens=condition_tokens)
        prediction = self(
            noisy_sample(x0, r.noise, r.t), r.t, text.select(r.keep_text, null_text), condition, r.keep_mask,
            grid=self.grid(*images.shape[-2:]),
        )  # fmt: skip
        return F.mse_loss(prediction.float(), velocity_target(x0, r.noise).float())


class FaceMoGLEModel(Denoiser):
    """The compact scale: a `resolution`² RGB image is its own latent, patchified into tokens."""

    def __init__(self, config: FaceMoGLEConfig):
        super().__init__()
        from diffusers import FluxTransformer2DModel

        self.config = config
        self.resolution, self.patch_size, self.token_dim = (
            config.resolution,
            config.patch_size,
            config.token_dim,
        )
        self.prediction = config.prediction
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
        self.pixel_head = PixelHead(config.pixel_head) if config.pixel_head else None

    def refine(
        self, output: torch.Tensor, noisy_tokens: torch.Tensor, grid: tuple[int, int] | None
    ) -> torch.Tensor:
        if self.pixel_head is None:
            return output
        rows, cols = grid or self.grid(self.resolution, self.resolution)
        height, width = rows * self.patch_size, cols * self.patch_size
        pixels = self.decode(output, height, width)  # [B, 3, H, W]
        noisy = self.decode(noisy_tokens.to(pixels.dtype), height, width)
        return self.encode_images(pixels + self.pixel_head(torch.cat([pixels, noisy], dim=1)))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(images, self.patch_size)

    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return unpatchify(tokens, self.patch_size, height, width)

    def mask_tokens(self, labels: torch.Tensor, remember: bool = True) -> torch.Tensor:
        return encode_masks(labels, self.patch_size)


class PixelHead(nn.Module):
    """Two 3×3 convolutions over [output, x_t] pixels [B, 6, H, W] → a correction [B, 3, H, W], 0 at init."""

    def __init__(self, hidden: int):
        super().__init__()
        self.inner = nn.Conv2d(6, hidden, 3, padding=1)
        self.outer = nn.Conv2d(hidden, 3, 3, padding=1)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.outer(F.silu(self.inner(pixels)))


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
        shift: float = 1.0,
    ) -> StepRandomness:
        """Draws that depend only on (seed, step), so any process can take its slice of the global batch.

        shift: training times warped towards noise as the sampler's grid is (1: logit-normal as drawn)."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        keep_text, keep_mask, keep_local = (dropout or ModalityDropout()).sample(
            batch, NUM_CLASSES, generator
        )
        t = sample_time(batch, generator, shift=shift)
        noise = torch.randn(batch, *token_shape, generator=generator)
        return cls(noise, t, keep_text, keep_mask, keep_local)

    def slice(self, rows: slice) -> StepRandomness:
        return StepRandomness(
            self.noise[rows], self.t[rows], self.keep_text[rows], self.keep_mask[rows], self.keep_local[rows]
        )

    def to(self, device: torch.device | str) -> StepRandomness:
        return StepRandomness(*(getattr(self, f.name).to(device) for f in fields(self)))
