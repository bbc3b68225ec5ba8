"""The full scale: FLUX.1-dev (a local diffusers folder) + LoRA on condition tokens + MoGLE, as in the paper.

Images and the 20 condition maps are encoded by the frozen FLUX VAE (latent mean, shift and scaling
factors applied) and packed 2×2 into 64-dim tokens (1024 tokens at 512²). Text is FLUX's: T5 token
states and the CLIP pooled embedding. The LoRA (rank 4, α 4, the paper's targets) acts on condition
tokens only. Nothing is downloaded: every component comes from the folder the user passes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .flow import AUTHORS_SAMPLING, SamplingDefaults
from .labels import split_mask
from .model import Denoiser
from .mogle import MoGLE, MoGLEConfig
from .quantization import quantization_configs
from .text import TextEmbedding
from .transformer import ConditionedFlux

# The paper's LoRA targets: x_embedder; double blocks' norm1.linear, attn.to_q/k/v, attn.to_out.0, ff.net.2;
# single blocks' norm.linear, proj_mlp, proj_out, attn.to_q/k/v (peft matches a string as a full regex).
PAPER_LORA_TARGETS = (
    r"^(x_embedder"
    r"|transformer_blocks\.\d+\.(norm1\.linear|attn\.to_q|attn\.to_k|attn\.to_v|attn\.to_out\.0|ff\.net\.2)"
    r"|single_transformer_blocks\.\d+\.(norm\.linear|proj_mlp|proj_out|attn\.to_q|attn\.to_k|attn\.to_v))$"
)
LORA_FILE = "pytorch_lora_weights.safetensors"
SHARED = ("time_text_embed", "norm_out")  # computed once for all token groups: no condition-only LoRA there
SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


class FluxFolderError(FileNotFoundError):
    """A FLUX folder that cannot be loaded; the message names what is missing."""


@dataclass
class FluxMoGLEConfig:
    """The full-scale model; saved as config.json beside the LoRA and MoGLE weights."""

    flux_folder: str
    resolution: int = 512
    guidance: float = 3.5  # FLUX.1-dev's embedded guidance at sampling
    train_guidance: float = 1.0  # ... and in training (the authors' setting)
    max_text_tokens: int = 512
    lora_rank: int = 4
    lora_alpha: int = 4
    vae_batch_size: int = 20  # images per VAE encoder call: one mask's 20 maps (bench_flux.py: its memory)
    condition_cache_bytes: int = 2**28  # in-memory cache of encoded masks (≈ 50 at 512² in float32)
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    sampling: SamplingDefaults = field(default_factory=lambda: replace(AUTHORS_SAMPLING))

    def __post_init__(self):
        if isinstance(self.mogle, dict):
            self.mogle = MoGLEConfig(**self.mogle)
        if isinstance(self.sampling, dict):
            self.sampling = SamplingDefaults(**self.sampling)

    def to_dict(self) -> dict:
        return asdict(self)


def check_flux_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FluxFolderError(
            f"FLUX folder {folder} does not exist. Pass a local copy of FLUX.1-dev in the diffusers layout "
            f"(subfolders {', '.join(SUBFOLDERS)}); nothing is downloaded."
        )
    missing = [name for name in SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise FluxFolderError(f"{folder} is not a FLUX folder in the diffusers layout: missing {missing}.")
    return folder


def pack(latents: torch.Tensor) -> torch.Tensor:
    """FLUX's 2×2 packing: [B, C, H, W] → [B, (H/2)·(W/2), 4C], features ordered (C, 2, 2)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # [B, H/2, W/2, C, 2, 2]
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The inverse of pack: [B, rows·cols, 4C] → [B, C, 2·rows, 2·cols]."""
    b, _, dim = tokens.shape
    x = tokens.view(b, rows, cols, dim // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C, rows, 2, cols, 2]
    return x.reshape(b, dim // 4, rows * 2, cols * 2)


def _mask_key(labels: torch.Tensor) -> str:
    """A label map's content hash (values and shape) for the condition cache."""
    array = labels.cpu().numpy().astype("uint8")
    return hashlib.sha1(array.tobytes() + repr(array.shape).encode()).hexdigest()


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class FluxTextEncoder:
    """FLUX's text conditioning: T5 per-token states (padded to max_tokens, all attended, as FLUX does) and
    the CLIP pooled embedding. The empty prompt is FLUX's empty-string encoding."""

    def __init__(self, tokenizer, text_encoder, tokenizer_2, text_encoder_2, max_tokens: int = 512):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder.eval().requires_grad_(False)
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2.eval().requires_grad_(False)
        self.max_tokens = max_tokens
        self.token_dim = text_encoder_2.config.d_model
        self.pooled_dim = text_encoder.config.hidden_size
        self.device = text_encoder_2.device  # where the encoders run (the GPU when they are offloaded)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbedding:
        device = self.device
        t5 = self.tokenizer_2(
            prompts, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt"
        )
        tokens = self.text_encoder_2(t5.input_ids.to(device)).last_hidden_state  # [B, L, D]
        clip_length = min(77, getattr(self.tokenizer, "model_max_length", 77))
        clip = self.tokenizer(
            prompts, padding="max_length", max_length=clip_length, truncation=True, return_tensors="pt"
        )
        pooled = self.text_encoder(clip.input_ids.to(device)).pooler_output  # [B, P]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        return TextEmbedding(tokens, mask, pooled)


class FluxFaceMoGLE(Denoiser):
    """FLUX transformer + LoRA (condition tokens only) + MoGLE, with VAE latents as tokens."""

    def __init__(self, config: FluxMoGLEConfig, transformer, vae):
        super().__init__()
        self.config = config
        self.transformer = ConditionedFlux(transformer, lora_on="condition")
        self.vae = vae.eval().requires_grad_(False)
        self.mogle = MoGLE(config.mogle)
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.resolution, self.patch_size = config.resolution, scale * 2
        self.token_dim = vae.config.latent_channels * 4
        if self.token_dim != config.mogle.token_dim:
            raise ValueError(
                f"MoGLE works on {config.mogle.token_dim}-dim tokens, the VAE packs {self.token_dim}."
            )
        self._condition_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()

    # --- pixels and masks to tokens ---

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → the VAE mean's tokens [B, N, 64], at most vae_batch_size images per call."""
        config = self.vae.config
        chunks = []
        for chunk in images.split(self.config.vae_batch_size):
            latents = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist.mean
            chunks.append(pack((latents - (config.shift_factor or 0.0)) * config.scaling_factor).float())
        return torch.cat(chunks)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        rows, cols = self.grid(height, width)
        latents = unpack(tokens, rows, cols).to(self.vae.dtype)
        latents = latents / self.vae.config.scaling_factor + (self.vae.config.shift_factor or 0.0)
        return self.vae.decode(latents).sample.float()

    def mask_tokens(self, labels: torch.Tensor, remember: bool = True) -> torch.Tensor:
        """The 20 maps' tokens of each mask [B, 20, N, C]; each distinct mask is VAE-encoded once, in
        chunks of vae_batch_size maps, and kept in a small in-memory cache (least recently used first out)
        unless remember=False (a dataset's cache build, which would only churn it)."""
        keys = [_mask_key(m) for m in labels]
        with self._cache_lock:
            found = {key: self._condition_cache[key] for key in keys if key in self._condition_cache}
        first = {key: i for i, key in reversed(list(enumerate(keys))) if key not in found}
        for key, i in first.items():
            maps = split_mask(labels[i : i + 1]) * 2 - 1  # [1, 20, 3, H, W] in [-1, 1]
            found[key] = self.encode_images(maps[0])  # [20, N, C]
        for key in keys if remember else ():
            self._remember(key, found[key])
        return torch.stack([found[key] for key in keys])

    def _remember(self, key: str, tokens: torch.Tensor) -> None:
        with self._cache_lock:  # the pipeline may serve two threads
            cache = self._condition_cache
            cache[key] = cache.pop(key, tokens)  # most recently used last
            size = sum(_nbytes(t) for t in cache.values())
            while size > self.config.condition_cache_bytes and len(cache) > 1:
                size -= _nbytes(cache.pop(next(iter(cache))))

    def guidance(self, batch: int, device) -> torch.Tensor | None:
        if not self.transformer.flux.config.guidance_embeds:
            return None
        value = self.config.train_guidance if self.training else self.config.guidance
        return torch.full((batch,), value, device=device)

    # --- LoRA ---

    def add_lora(self, init: str = "gaussian") -> None:
        """Add the paper's LoRA (rank, α from the config) to the transformer's target layers."""
        from peft import LoraConfig

        lora = LoraConfig(
            r=self.config.lora_rank, lora_alpha=self.config.lora_alpha, init_lora_weights=init,
            target_modules=PAPER_LORA_TARGETS,
        )  # fmt: skip
        self.transformer.flux.add_adapter(lora)

    def save_lora(self, folder: str | os.PathLike) -> Path:
        """Save the LoRA in the diffusers LoRA format (pytorch_lora_weights.safetensors, `transformer.` keys)."""
        from diffusers import FluxPipeline
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.transformer.flux)
        FluxPipeline.save_lora_weights(folder, transformer_lora_layers=state)
        return Path(folder) / LORA_FILE

    def load_lora(self, path: str | os.PathLike) -> None:
        """Load a diffusers-format LoRA file (such as the authors' released one) into the transformer."""
        path = Path(path)
        if not path.is_file():
            raise FluxFolderError(
                f"LoRA file {path} does not exist; pass the path of pytorch_lora_weights.safetensors."
            )
        self.transformer.flux.load_lora_adapter(str(path), prefix="transformer", adapter_name="default")
        shared = [
            n
            for n, m in self.transformer.flux.named_modules()
            if hasattr(m, "base_layer") and n.startswith(SHARED)
        ]
        if shared:
            raise FluxFolderError(
                f"{path} adapts {shared[:3]}, which image and condition tokens share (the time embedding, the "
                "output norm): condition-only LoRA cannot keep it off the image. Use a LoRA of the paper's targets."
            )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """LoRA and MoGLE; everything else stays frozen."""
        return [p for n, p in self.named_parameters() if "lora_" in n or n.startswith("mogle.")]


def load_flux(
    flux_folder: str | os.PathLike,
    lora: str | os.PathLike | None = None,
    mogle: str | os.PathLike | None = None,
    config: FluxMoGLEConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    quantization: str | None = None,
):
    """FLUX components from a local folder + LoRA + MoGLE (released .pt or native safetensors).

    quantization: load the transformer and T5 quantized (see QUANTIZATIONS); the LoRA runs on the
    quantized base. Returns (FluxFaceMoGLE, FluxTextEncoder).
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    folder = check_flux_folder(flux_folder)
    config = config or FluxMoGLEConfig(flux_folder=str(folder))
    quantized, quantized_t5 = (
        quantization_configs(quantization, dtype, device) if quantization else (None, None)
    )
    on_load = quantization == "nf4"  # bitsandbytes places its weights on the GPU while loading
    transformer = FluxTransformer2DModel.from_pretrained(
        folder / "transformer", torch_dtype=dtype, local_files_only=True, quantization_config=quantized
    ).requires_grad_(False)  # frozen (training turns its LoRA on): autocast keeps no bf16 copies of it
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype, local_files_only=True)
    t5 = T5EncoderModel.from_pretrained(
        folder / "text_encoder_2", torch_dtype=dtype, local_files_only=True, quantization_config=quantized_t5
    )
    text = FluxTextEncoder(
        AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype, local_files_only=True).to(
            device
        ),
        AutoTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True),
        t5 if on_load else t5.to(device),
        max_tokens=config.max_text_tokens,
    )
    model = FluxFaceMoGLE(config, transformer if on_load else transformer.to(device), vae.to(device))
    model.mogle.to(device)
    if lora is not None:
        model.load_lora(lora)
    if mogle is not None:
        model.mogle = load_mogle(mogle, config).to(device)
    return model, text


def load_mogle(path: str | os.PathLike, config: FluxMoGLEConfig) -> MoGLE:
    """MoGLE weights: the authors' released .pt layout, or facemogle's safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FluxFolderError(
            f"MoGLE file {path} does not exist; pass global_local_mask_moe.pt or mogle.safetensors."
        )
    if path.suffix == ".pt":
        return MoGLE.from_official(path, time_scale=config.mogle.time_scale)
    from safetensors.torch import load_file

    module = MoGLE(config.mogle)
    module.load_state_dict(load_file(path))
    return module
