"""FaceMoGLEPipeline: load or save a model folder, and generate faces from a mask, a prompt, or both."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .edit import EditResult, edit
from .errors import FaceMoGLEError
from .flow import (
    SamplingDefaults,
    combine_guidance,
    guidance_branches,
    inside,
    sample_ode,
    time_grid,
    time_shift,
)
from .images import tensor_to_images
from .io import atomic_write, write_json
from .labels import Fit, MaskError, MaskSource, fit_square, load_mask
from .model import Denoiser, FaceMoGLEConfig, FaceMoGLEModel, config_for_size
from .mogle import MoGLEConfig
from .precision import bf16_is_fast
from .text import MiniLMTextEncoder, TextEmbedding, TextEncoder
from .transformer import AttentionOptions
from .watermark import mark_all

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"  # in an exported model folder: the step its weights are of, and their run
FORMAT = "facemogle-compact"
FLUX_FORMAT = "facemogle-flux"
MOGLE_FILE = "mogle.safetensors"
OFFICIAL_MOGLE_FILE = "global_local_mask_moe.pt"
MAX_PROMPT_CHARS = 2000
OUTPUT_TYPES = ("pil", "np", "pt")


class CheckpointError(ValueError):
    """A model folder that cannot be loaded; the message says what is wrong and how to fix it."""


def default_model_folder() -> Path:
    """The model shipped inside the package (facemogle/assets/default)."""
    return Path(str(resources.files("facemogle") / "assets" / "default"))


def load_text_encoder(config: FaceMoGLEConfig) -> TextEncoder:
    if config.text_encoder != "minilm":
        raise CheckpointError(
            f"Unknown text encoder {config.text_encoder!r} in the model config; expected 'minilm'."
        )
    return MiniLMTextEncoder(max_tokens=config.max_text_tokens)


class FaceMoGLEPipeline:
    """Mask-to-face, text-to-face and text+mask-to-face generation with one compact Face-MoGLE model."""

    def __init__(self, model: Denoiser, text_encoder: TextEncoder | None = None):
        self.model = model.eval()
        self.config = model.config
        self.text_encoder = text_encoder or load_text_encoder(model.config)
        self._execution_device: torch.device | None = None  # set by the CPU-offload options

    # --- construction, loading, saving ---

    @classmethod
    def init(cls, size: str = "tiny", seed: int = 0, **overrides) -> FaceMoGLEPipeline:
        """A randomly initialised model of a preset size (for tests and as a starting point for training)."""
        torch.manual_seed(seed)
        return cls(FaceMoGLEModel(config_for_size(size, **overrides)))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        quantization: str | None = None,
    ) -> FaceMoGLEPipeline:
        """Load a saved model folder (compact, or full scale with a FLUX folder); None loads the shipped default.

        dtype applies to the FLUX components (bfloat16 halves their memory); compact weights load as float32.
        quantization (full scale): "int8", "float8" or "nf4" for the transformer and T5 (quantization.QUANTIZATIONS).
        """
        folder = Path(folder) if folder is not None else default_model_folder()
        data = read_config(folder)
        if data.pop("format") == FLUX_FORMAT:
            return cls._from_flux_folder(folder, data, dtype, device, quantization)
        if quantization:
            raise ValueError("Quantization applies to the full scale; the compact model is small as it is.")
        config = compact_config(data, folder / CONFIG_FILE)
        model = FaceMoGLEModel(config)
        load_weights(model, folder / WEIGHTS_FILE)
        return cls(model.to(device))

    @classmethod
    def from_flux(
        cls,
        flux_folder: str | os.PathLike,
        lora: str | os.PathLike | None = None,
        mogle: str | os.PathLike | None = None,
        gating_time_scale: float = 1.0,
        guidance: float = 3.5,
        resolution: int = 512,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        quantization: str | None = None,
    ) -> FaceMoGLEPipeline:
        """The paper's model: a local FLUX.1-dev folder (diffusers layout) + LoRA file + MoGLE weights.

        gating_time_scale: 1 (default) feeds the gate t ∈ [0, 1], as the released checkpoint was trained;
        1000 reproduces the authors' sampler, which fed it the scheduler's t × 1000.
        """
        from .flux import FluxMoGLEConfig, load_flux

        config = FluxMoGLEConfig(
            flux_folder=str(flux_folder), resolution=resolution, guidance=guidance,
            mogle=MoGLEConfig(time_scale=gating_time_scale),
        )  # fmt: skip
        model, text = load_flux(flux_folder, lora, mogle, config, dtype, device, quantization)
        return cls(model, text)

    @classmethod
    def _from_flux_folder(cls, folder: Path, data: dict, dtype, device, quantization) -> FaceMoGLEPipeline:
        from .flux import LORA_FILE, FluxMoGLEConfig, load_flux

        config = FluxMoGLEConfig(**data)
        lora = folder / LORA_FILE if (folder / LORA_FILE).is_file() else None
        model, text = load_flux(
            config.flux_folder, lora, folder / MOGLE_FILE, config, dtype, device, quantization
        )
        return cls(model, text)

    def save_pretrained(self, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write config.json and the weights, each atomically (temporary file, then rename).

        Compact scale: model.safetensors. Full scale: the LoRA in the diffusers format, MoGLE as
        safetensors and in the authors' released .pt layout; the FLUX folder is referenced, not copied.
        dtype: store the compact weights in this dtype (bfloat16 halves the file; loading casts them back
        to the model's float32).
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(self.model, FaceMoGLEModel):
            state = {
                k: v.detach().to(dtype or v.dtype).contiguous().cpu()
                for k, v in self.model.state_dict().items()
            }
            atomic_write(
                folder / WEIGHTS_FILE, lambda path: save_file(state, path, metadata={"format": FORMAT})
            )
            config = {"format": FORMAT, **self.config.to_dict()}
        else:
            if any("lora_" in name for name, _ in self.model.named_parameters()):
                self.model.save_lora(folder)
            mogle = {k: v.detach().contiguous().cpu() for k, v in self.model.mogle.state_dict().items()}
            atomic_write(folder / MOGLE_FILE, lambda path: save_file(mogle, path))
            atomic_write(
                folder / OFFICIAL_MOGLE_FILE, lambda path: torch.save(self.model.mogle.to_official(), path)
            )
            config = {"format": FLUX_FORMAT, **self.config.to_dict()}
        write_json(folder / CONFIG_FILE, config)

    def watermark_for(self, watermark: bool | None) -> bool:
        """Whether outputs are marked: as asked, or by default at full scale only."""
        return (not self.is_compact) if watermark is None else bool(watermark)

    @property
    def is_compact(self) -> bool:
        """The compact scale (pixel space, SynthFace evaluators apply), not FLUX."""
        return isinstance(self.model, FaceMoGLEModel)

    @property
    def device(self) -> torch.device:
        return self._execution_device or next(self.model.parameters()).device

    # --- memory options (full scale) ---

    def enable_vae_tiling(self) -> None:
        """Encode and decode with the VAE tile by tile: large images in bounded memory."""
        self._vae("tiling").enable_tiling()

    def enable_vae_slicing(self) -> None:
        """Run the VAE one image at a time (batches of images, or the 20 condition maps, in less memory)."""
        self._vae("slicing").enable_slicing()

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep T5, CLIP, the transformer and the VAE in CPU memory; each moves to `device` while it runs
        (accelerate hooks), so one component at a time occupies the GPU. MoGLE (small) stays on `device`."""
        from accelerate import cpu_offload_with_hook

        hook = None
        for module in self._offloadable():
            _, hook = cpu_offload_with_hook(module.to("cpu"), device, prev_module_hook=hook)
        self._offloaded(device)

    def enable_sequential_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Weights stay in CPU memory and visit `device` one submodule at a time: the least GPU memory,
        the slowest sampling."""
        from accelerate import cpu_offload

        for module in self._offloadable():
            cpu_offload(module, torch.device(device))
        self._offloaded(device)

    def _vae(self, option: str):
        vae = getattr(self.model, "vae", None)
        if vae is None:
            raise ValueError(
                f"VAE {option} applies to the full scale; the compact model works in pixels, without a VAE."
            )
        return vae

    def _offloadable(self) -> list[torch.nn.Module]:
        if not hasattr(self.model, "vae"):
            raise ValueError(
                "CPU offload applies to the full scale; the compact model fits in memory as it is."
            )
        text = self.text_encoder
        return [text.text_encoder, text.text_encoder_2, self.model.transformer, self.model.vae]

    def _offloaded(self, device: str | torch.device) -> None:
        self._execution_device = self.text_encoder.device = torch.device(device)
        self.model.mogle.to(device)

    # --- speed ---

    def compile(self, **options) -> None:
        """Compile the transformer in place with torch.compile (`options` go to it). Worth it where one
        process makes many images (eval, batches of images): after a one-time compilation it takes less time
        per image (README, Benchmarks), so it is an opt-in."""
        on_cpu_kernels = self.device.type == "cpu" and options.get("backend", "inductor") == "inductor"
        if on_cpu_kernels and not _finds_cpp_compiler():
            raise FaceMoGLEError(
                "torch.compile builds C++ kernels on the CPU and found no C++ compiler (the CXX variable, else "
                "g++): install one (e.g. `apt install g++`) or sample without compiling (leave out --compile "
                "or pipe.compile())."
            )
        self.model.transformer.compile(**options)

    # --- generation ---

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | None = None,
        mask: MaskSource | None = None,
        num_inference_steps: int | None = None,
        text_guidance: float | None = None,
        mask_guidance: float | None = None,
        seed: int | None = 0,
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        sampler: str | None = None,
        condition_strength: float = 1.0,
        fit: Fit = "error",
        autocast: bool | None = None,
        progress: bool = False,
        unconditional: bool = False,
        text_only: str | None = None,
        text_interval: tuple[float, float] | None = None,
        mask_interval: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        callback_on_step_end: Callable | None = None,
        output_type: str = "pil",
        watermark: bool | None = None,
    ) -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Generate num_images faces. At least one of prompt and mask is required, unless unconditional=True
        (samples from neither, e.g. for a realism baseline).

        mask: a label map or colour mask in any form `load_mask` reads; another size is resized
        (nearest neighbour) with a warning; a non-square one needs fit="crop" or "pad".
        num_inference_steps, text_guidance, mask_guidance (separate classifier-free guidance scales,
            1 = none), their time intervals text_interval and mask_interval ((lo, hi): the term applies at
            lo ≤ t ≤ hi, t = 1 being noise), sampler and text_only ("dropped": no mask stream;
            "background": an all-background mask) default to the model's `config.sampling` (compact: 20
            Euler steps, guidance 4 / 1.5 at every step; full scale: the authors' 28 Euler steps without
            classifier-free guidance).
        generator: a torch.Generator for the noise (then seed is not used).
        callback_on_step_end(pipe, step, t, {"latents": x}) → dict: called after each step; a "latents"
            entry it returns replaces x (diffusers' convention).
        output_type: "pil" (a list of images), "np" ([B, H, W, 3] floats in [0, 1]) or "pt" ([B, 3, H, W]).
        autocast: bfloat16 autocast on the model's device; None: where the device runs bfloat16 fast
            (GPUs, CPUs with AVX512-BF16 or AMX; see benchmarks/bench_transformer.py).
        watermark: add the invisible watermark (facemogle/watermark.py; images of 128² and up, smaller ones
            are left unmarked with a warning); None: at full scale yes, at the compact scale no (the CLI and
            the demo mark what they save). Marked "np"/"pt" outputs are 8-bit values.
        """
        # 1. Check inputs; fill what the caller left out from the model's sampling defaults
        sampling = self.config.sampling.override(
            steps=num_inference_steps, sampler=sampler, text_guidance=text_guidance,
            mask_guidance=mask_guidance, text_only=text_only, text_interval=text_interval,
            mask_interval=mask_interval,
        )  # fmt: skip
        steps = sampling.steps
        self._check_inputs(prompt, mask, steps, num_images, unconditional, output_type)
        height, width = self._check_size(height, width)
        has_text = bool(prompt and prompt.strip())
        labels = self._prepare_mask(mask, height, width, fit) if mask is not None else None
        scales = (sampling.text_guidance, sampling.mask_guidance)
        if labels is None and has_text and sampling.text_only == "background":
            labels, scales = (
                np.zeros((height, width), np.int64),
                (scales[0], 1.0),
            )  # the authors' text-only input
        # 2. Prepare the noise and the time grid
        rows, cols = self.model.grid(height, width)
        device = self.device
        noise = _noise((num_images, rows * cols, self.model.token_dim), seed, generator).to(device)
        grid = time_grid(steps, time_shift(rows * cols)).to(device)
        with self.precision(autocast):
            # 3. Encode the prompt and the mask once; build the per-step constants once
            velocity = self.velocity(
                prompt or "", labels, *scales, num_images, (rows, cols),
                AttentionOptions(condition_strength=condition_strength), sampling,
            )  # fmt: skip
            # 4. Denoise
            tokens = sample_ode(
                velocity, noise, grid, sampling.sampler,
                progress=_progress_bar(steps) if progress else None,
                on_step_end=self._step_end(callback_on_step_end),
            )  # fmt: skip
        # 5. Decode
        return _output(
            self.model.decode(tokens.float(), height, width), output_type, self.watermark_for(watermark)
        )

    def edit(self, image, **options) -> EditResult:
        """Edit an existing face: a new mask (operation "mask"), one attribute ("attribute", e.g. "make the
        hair blond") or a new person on the same layout ("regenerate"). See `facemogle.edit.edit`."""
        return edit(self, image, **options)

    def _step_end(self, callback: Callable | None):
        """diffusers' callback_on_step_end convention, as the sampler's on_step_end(i, t, x) → x."""
        if callback is None:
            return None

        def on_step_end(i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            returned = callback(self, i, t, {"latents": x}) or {}
            return returned.get("latents", x)

        return on_step_end

    @contextlib.contextmanager
    def precision(self, autocast: bool | None = None):
        """bfloat16 autocast on the model's device (None: where the device runs it fast), for sampling."""
        device = self.device
        autocast = bf16_is_fast(device) if autocast is None else autocast
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")  # rms_norm
            yield

    def velocity(
        self,
        prompt: str,
        labels: np.ndarray | None,
        text_guidance: float,
        mask_guidance: float,
        num_images: int,
        grid: tuple[int, int],
        attention: AttentionOptions | None = None,
        sampling: SamplingDefaults | None = None,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The guided velocity v(x, t) of one condition (prompt, "" for none; label map or None), for the
        sampler and for editing. Each guidance term applies inside its interval of `sampling` (default the
        model's); the branches a step needs run as one forward with the mask stream and one without it (no
        condition tokens there at all), each with per-step constants built once."""
        sampling = sampling or self.config.sampling
        has_text, has_mask = bool(prompt and prompt.strip()), labels is not None
        texts = self.text_encoder.encode([prompt if has_text else "", ""]).to(self.device)
        condition = None
        if has_mask:
            condition = self.model.encode_condition(
                torch.from_numpy(np.array(labels, dtype=np.int64))[None].to(self.device)
            )
        run = _BranchRunner(self.model, texts, condition, num_images, attention or AttentionOptions(), grid)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            time = float(t[0])
            text_scale = text_guidance if inside(time, sampling.text_interval) else 1.0
            mask_scale = mask_guidance if inside(time, sampling.mask_interval) else 1.0
            branches = guidance_branches(has_text, has_mask, text_scale, mask_scale)
            predictions = {}
            for use_mask in (True, False):
                group = tuple(b for b in branches if b[1] == use_mask)
                if group:
                    predictions.update(run(group, x, t))
            return combine_guidance(predictions, has_text, has_mask, text_scale, mask_scale)

        return velocity

    def _check_size(self, height, width) -> tuple[int, int]:
        height = height or self.model.resolution
        width = width or height
        self.model.grid(height, width)
        return height, width

    def _check_inputs(self, prompt, mask, steps, num_images, unconditional, output_type) -> None:
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}.")
        if mask is None and not (prompt and prompt.strip()) and not unconditional:
            raise ValueError("Give a mask, a prompt, or both: there is nothing to generate from.")
        if prompt and not _is_text(prompt):
            raise ValueError(
                "The prompt holds characters that are not text (lone UTF-16 surrogates); retype it."
            )
        if prompt and len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"The prompt has {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}.")
        if steps < 1 or num_images < 1:
            raise ValueError(f"num_inference_steps and num_images must be ≥ 1, got {steps} and {num_images}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    def _prepare_mask(self, mask: MaskSource, height: int, width: int, fit: Fit) -> np.ndarray:
        labels = load_mask(mask)
        if labels.shape == (height, width):
            return labels
        if labels.shape[0] * width != labels.shape[1] * height:
            if height != width:
                raise MaskError(
                    f"The mask is {labels.shape[1]}×{labels.shape[0]} but the output is {width}×{height}; "
                    "give a mask of the output's aspect ratio."
                )
            labels = fit_square(labels, fit)
        warnings.warn(
            f"The mask ({labels.shape[1]}×{labels.shape[0]}) was resized (nearest neighbour) to {width}×{height}.",
            stacklevel=3,
        )
        return np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))


def _finds_cpp_compiler() -> bool:
    """Whether torch.compile's CPU backend (inductor) finds the C++ compiler it builds kernels with."""
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return False
    return True


def _is_text(prompt: str) -> bool:
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _noise(shape: tuple[int, ...], seed: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise from the caller's generator, else from seed (a random one when None)."""
    if generator is None:
        generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    return torch.randn(shape, generator=generator, device=generator.device)


def _output(images: torch.Tensor, output_type: str, watermark: bool = False):
    """Decoded images [B, 3, H, W] in [-1, 1] as PIL images, or in [0, 1] as a [B, H, W, 3] array or the tensor;
    watermarked first when asked (where they are large enough)."""
    if watermark:
        pil = tensor_to_images(images)
        marked = mark_all(pil)
        if output_type == "pil":
            return marked
        if marked is not pil:  # marked: the 8-bit values, as they were saved
            pixels = torch.as_tensor(np.stack([np.asarray(m) for m in marked])).permute(
                0, 3, 1, 2
            )  # [B, 3, H, W]
            images = (pixels.float() / 127.5 - 1).to(images.device)
    if output_type == "pil":
        return tensor_to_images(images)
    images = (images.float().clamp(-1, 1) + 1) / 2
    return images if output_type == "pt" else images.permute(0, 2, 3, 1).cpu().numpy()  # [B, H, W, 3]


def _row(text: TextEmbedding, i: int) -> TextEmbedding:
    return TextEmbedding(text.tokens[i : i + 1], text.mask[i : i + 1], text.pooled[i : i + 1])


def _stack_texts(rows: list[TextEmbedding], num_images: int) -> TextEmbedding:
    """One row per branch, each repeated num_images times: [branches × num_images, ...]."""
    return TextEmbedding.cat([row.repeat(num_images) for row in rows])


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return lambda steps: tqdm(steps, total=total, desc="sampling", unit="step")


def model_fingerprint(folder: str | os.PathLike | None = None) -> str:
    """A hash of a model folder's files (None: the shipped default), so that results made with other
    weights at the same path are never taken for this model's. training.json is left out: it says where
    the weights came from (the run's paths), so one model exported from two runs hashes the same."""
    folder = Path(folder) if folder is not None else default_model_folder()
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != TRAINING_FILE):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_config(folder: Path) -> dict:
    """config.json of a model folder, with its "format" checked."""
    if not folder.exists():
        raise CheckpointError(
            f"Model folder {folder} does not exist. Pass a folder written by save_pretrained or `facemogle train`, "
            "or create a random one with `facemogle init-model --out FOLDER`."
        )
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}; it is not a facemogle model folder.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error}); restore it from the model's source."
        ) from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, FLUX_FORMAT):
        raise CheckpointError(f"{path} is not a facemogle config (its 'format' field is missing or unknown).")
    return data


def compact_config(data: dict, path: Path) -> FaceMoGLEConfig:
    try:
        return FaceMoGLEConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} does not describe a valid model: {error}") from None


def load_weights(model: FaceMoGLEModel, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {path.name}; copy the weights beside {CONFIG_FILE}.")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({error}); download or copy it again."
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not match {path.parent / CONFIG_FILE}: {len(missing)} missing tensors {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of another shape {wrong[:3]}. "
            "The weights and the config must come from the same model."
        )
    model.load_state_dict(state)


class _BranchRunner:
    """Runs guidance branches that share their mask use (all with the mask stream, or all without) as one
    batched forward; each set of branches gets its texts, condition rows and step constants once."""

    def __init__(self, model: Denoiser, texts: TextEmbedding, condition, num_images: int, attention, grid):
        self.model, self.texts, self.condition = model, texts, condition
        self.num_images, self.attention, self.grid = num_images, attention, grid
        self.prepared: dict[tuple, tuple] = {}

    def __call__(
        self, branches: tuple[tuple[bool, bool], ...], x: torch.Tensor, t: torch.Tensor
    ) -> dict[tuple[bool, bool], torch.Tensor]:
        if branches not in self.prepared:
            self.prepared[branches] = self._prepare(branches)
        text, condition, constants = self.prepared[branches]
        k = len(branches)
        v = self.model(
            x.repeat(k, 1, 1), t.repeat(k), text, condition, constants=constants, grid=self.grid
        )  # [k·B, N, C]
        return dict(zip(branches, v.float().chunk(k)))

    def _prepare(self, branches):
        n = self.num_images
        text = _stack_texts([_row(self.texts, 0 if use_text else 1) for use_text, _ in branches], n)
        with_mask = branches[0][1]
        condition = self.condition.repeat(n * len(branches)) if with_mask else None
        constants = self.model.step_constants(text, with_mask, None, self.attention, self.grid)
        return text, condition, constants
