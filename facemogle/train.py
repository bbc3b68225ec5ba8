"""The training loop (Hugging Face accelerate): one process on CPU by default, DDP under `accelerate launch`.

Determinism: every random draw of a step (data order, noise, t, modality dropout) comes from the run's
seed and the step number, for the whole global batch, and each process takes its own slice. So a run
resumed from a checkpoint continues bit for bit, and N processes reach the weights of one process with
the same global batch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .flow import ModalityDropout
from .model import Denoiser, FaceMoGLEConfig, FaceMoGLEModel, StepRandomness, config_for_size
from .mogle import MoGLEConfig
from .pipeline import FaceMoGLEPipeline, atomic_write, load_text_encoder
from .precision import resolve_mixed_precision
from .text import TextEncoder

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model"
DONE = "DONE"


class RunFolderError(RuntimeError):
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
    size: str = "small"  # compact model preset, see model.SIZES
    resolution: int = 64
    patch_size: int | None = None  # compact: pixels per token side; None: the preset's (4 at "small")
    gating: str = "dynamic"  # MoGLE ablations: dynamic | static | scalar | none
    experts: bool = True
    local_experts: bool = True  # False: the global expert alone (ablation)
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
    keep_checkpoints: int = 2
    cache_in_memory: bool = True

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a JSON or YAML config file."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}.")
        return cls(**data)

    def model_config(self) -> FaceMoGLEConfig:
        overrides = {"patch_size": self.patch_size} if self.patch_size else {}
        config = config_for_size(self.size, resolution=self.resolution, **overrides)
        config.mogle = self.mogle_config(config.mogle)
        return config

    def mogle_config(self, base: MoGLEConfig | None = None) -> MoGLEConfig:
        """The MoGLE ablation switches of this run applied to `base` (default sizes when None)."""
        base = base or MoGLEConfig()
        num_experts = base.num_experts if self.local_experts else 1
        return dataclasses.replace(base, gating=self.gating, experts=self.experts, num_experts=num_experts)

    @property
    def dtype(self) -> torch.dtype:
        """Frozen full-scale weights and cached conditions: bfloat16 under bf16 mixed precision."""
        return torch.bfloat16 if self.mixed_precision == "bf16" else torch.float32


class TrainingObjective(torch.nn.Module):
    """The loss as a module's forward, so that DDP (through accelerate) sees a forward pass."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.model = model

    def forward(self, images, labels, text, null_text, randomness, condition_tokens=None):
        return self.model.loss(images, labels, text, null_text, randomness, condition_tokens)


def train(
    config: TrainConfig, resume: bool = False, overwrite: bool = False, stop_at: int | None = None
) -> Path:
    """Run (or resume) training; returns the run folder. stop_at: stop after that step (as if interrupted)."""
    from accelerate import Accelerator

    out = Path(config.out)
    # Autocast and gradient accumulation are done here, not by accelerate, whose process-wide state
    # could not change between runs in one process.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    mixed_precision = resolve_mixed_precision(config.mixed_precision, accelerator.device)
    config = dataclasses.replace(config, mixed_precision=mixed_precision)  # the saved config says which
    autocast = torch.autocast(
        accelerator.device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"
    )
    if accelerator.is_main_process:
        _prepare_run_folder(out, config, resume, overwrite)
    accelerator.wait_for_everyone()
    dataset = _open_dataset(config)
    model, text_encoder = build_model(config, accelerator.device)
    null_text = text_encoder.encode([""]).to(accelerator.device)
    cache = _condition_cache(config, model, dataset, accelerator)
    objective = TrainingObjective(model)
    optimizer = _optimizer(config, trainable_state(model).values())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup))
    )
    objective, optimizer, scheduler = accelerator.prepare(objective, optimizer, scheduler)
    ema = {k: v.detach().clone().float() for k, v in trainable_state(model).items()}
    step = 0
    if resume:
        step = _load_checkpoint(out, model, optimizer, scheduler, ema)
    order = DataOrder(len(dataset), config.seed)
    global_batch = config.batch_size * accelerator.num_processes
    dropout = ModalityDropout(config.drop_text, config.drop_mask, config.drop_local)
    log = _CsvLog(out / "log.csv", accelerator.is_main_process)
    bar = _progress(config.steps, step, accelerator.is_main_process)
    started, seen = time.perf_counter(), 0
    previous_handler = signal.signal(signal.SIGTERM, _interrupt) if _in_main_thread() else None
    try:
        while step < config.steps and (stop_at is None or step < stop_at):
            objective.train()
            for micro in range(config.grad_accum):
                micro_index = step * config.grad_accum + micro
                indices = order.batch(micro_index, global_batch)
                mine = slice(
                    accelerator.process_index * config.batch_size,
                    (accelerator.process_index + 1) * config.batch_size,
                )
                images, labels, captions, stems = _collate(
                    [dataset[i] for i in indices[mine]], accelerator.device
                )
                randomness = StepRandomness.draw(
                    config.seed, micro_index, global_batch, model.token_shape(config.resolution), dropout
                ).slice(mine)
                condition_tokens = cache.batch(stems, accelerator.device) if cache else None
                last = micro == config.grad_accum - 1
                with (
                    contextlib.nullcontext() if last else accelerator.no_sync(objective)
                ):  # all-reduce once per step
                    with autocast:
                        text = text_encoder.encode(captions).to(accelerator.device)
                        loss = objective(
                            images,
                            labels,
                            text,
                            null_text,
                            randomness.to(accelerator.device),
                            condition_tokens,
                        )
                    accelerator.backward(loss / config.grad_accum)
            if config.grad_clip > 0:
                accelerator.clip_grad_norm_(objective.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += global_batch * config.grad_accum
            _update_ema(ema, model, config.ema, step)
            loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
            bar.update()
            if step % config.log_every == 0 or step == config.steps:
                log.write(step=step, loss=loss_value, lr=scheduler.get_last_lr()[0], images_per_s=rate,
                          elapsed_s=time.perf_counter() - started)  # fmt: skip
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step)
            if accelerator.is_main_process and config.sample_every and step % config.sample_every == 0:
                with ema_weights(model, ema):
                    grid = sample_grid(FaceMoGLEPipeline(model, text_encoder), dataset)
                grid.save(out / "samples" / f"step_{step:07d}.png")
    except KeyboardInterrupt:
        _save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step)
        bar.close()
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    bar.close()
    if step < config.steps and step % config.checkpoint_every:
        _save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step)  # stopped early
    if step >= config.steps and accelerator.is_main_process:
        with ema_weights(model, ema):
            pipe = FaceMoGLEPipeline(model, text_encoder)
            pipe.save_pretrained(out / FINAL_MODEL)
            if config.sample_every:
                sample_grid(pipe, dataset).save(out / "samples" / "final.png")
        loss_curve(out / "log.csv").save(out / "loss.png")
        (out / DONE).write_text(f"finished at step {step}\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _interrupt(signum, frame):
    """SIGTERM (a scheduler or session ending) is handled like Ctrl-C: checkpoint, then stop."""
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def export_model(
    run: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype | None = None, ema: bool = True
) -> int:
    """Write a model folder from a run's latest checkpoint (EMA weights by default), finished or not; returns its step."""
    run = Path(run)
    path = _latest_checkpoint(run)
    if path is None:
        raise RunFolderError(f"{run} has no checkpoint to export; is it a training run folder?")
    config = TrainConfig(**json.loads((run / "train_config.json").read_text()))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model, text_encoder = build_model(config, "cpu")
    _load_trainable(model, state["ema"] if ema else state["model"], path)
    FaceMoGLEPipeline(model, text_encoder).save_pretrained(out, dtype=dtype)
    return int(state["step"])


def build_model(config: TrainConfig, device: torch.device | str) -> tuple[Denoiser, TextEncoder]:
    """The model to train and its frozen text encoder. compact: every weight learns; flux: FLUX.1-dev
    from a local folder, frozen, with the paper's LoRA (gaussian init) and MoGLE learning."""
    torch.manual_seed(config.seed)
    if config.backend == "compact":
        model = FaceMoGLEModel(config.model_config())
        return model.to(device), load_text_encoder(model.config)
    if config.backend != "flux":
        raise ValueError(f"Unknown backend {config.backend!r}; use 'compact' or 'flux'.")
    from .flux import FluxMoGLEConfig, load_flux

    if not config.flux:
        raise RunFolderError(
            "--backend flux needs --flux FOLDER: a local FLUX.1-dev folder in the diffusers layout."
        )
    flux_config = FluxMoGLEConfig(flux_folder=config.flux, resolution=config.resolution, lora_rank=config.lora_rank,
                                  lora_alpha=config.lora_rank, mogle=config.mogle_config())  # fmt: skip
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


def _load_trainable(model: torch.nn.Module, state: dict, path: Path) -> None:
    expected = set(trainable_state(model))
    if set(state) != expected:
        raise RunFolderError(
            f"Checkpoint {path} does not match the run's model ({len(set(state) ^ expected)} parameter names "
            "differ); was train_config.json edited? Resume or export with the config the run was started with."
        )
    model.load_state_dict(state, strict=False)


class DataOrder:
    """Sample order: a fresh seeded permutation per epoch; batch k is positions k·B … (k+1)·B − 1 of the stream."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed = length, seed
        self._epoch, self._perm = -1, None

    def batch(self, index: int, size: int) -> np.ndarray:
        positions = np.arange(index * size, (index + 1) * size)
        return np.array([self._at(p) for p in positions])

    def _at(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.length)
        if epoch != self._epoch:
            self._epoch, self._perm = (
                epoch,
                np.random.default_rng([self.seed, epoch]).permutation(self.length),
            )
        return int(self._perm[offset])


def _collate(items: list[dict], device: torch.device | str):
    images = torch.stack([item["image"] for item in items]).to(device)
    labels = torch.stack([item["labels"] for item in items]).to(device)
    return images, labels, [item["caption"] for item in items], [item["stem"] for item in items]


def _condition_cache(config: TrainConfig, model: Denoiser, dataset, accelerator):
    """The dataset's mask encodings on disk (built once by the main process), or None (encode each step)."""
    folder = config.condition_cache or (
        str(Path(config.out) / "condition_cache") if config.backend == "flux" else None
    )
    if folder is None:
        return None
    from .data.cache import MANIFEST, ConditionCache, build_condition_cache

    encoder = f"{config.backend}:{config.flux or model.patch_size}"
    if accelerator.is_main_process and not (Path(folder) / MANIFEST).is_file():

        def encode(labels: torch.Tensor) -> torch.Tensor:
            return model.mask_tokens(labels.to(accelerator.device)).to("cpu", config.dtype)

        build_condition_cache(dataset, encode, folder, encoder)
    accelerator.wait_for_everyone()
    cache = ConditionCache(folder)
    cache.check(dataset, encoder)
    return cache


def _open_dataset(config: TrainConfig):
    from .data.folders import FaceMaskTextDataset

    return FaceMaskTextDataset(
        config.data,
        split="train",
        resolution=config.resolution,
        seed=config.seed,
        cache_in_memory=config.cache_in_memory,
    )


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
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


@torch.no_grad()
def _update_ema(ema: dict, model: torch.nn.Module, decay: float, step: int) -> None:
    decay = min(decay, (1 + step) / (10 + step))
    for name, value in trainable_state(model).items():
        ema[name].mul_(decay).add_(value.detach().float(), alpha=1 - decay)


# --- run folder and checkpoints ---


def _prepare_run_folder(out: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    if out.exists() and overwrite:
        shutil.rmtree(out)
    elif resume:
        if not _latest_checkpoint(out):
            raise RunFolderError(f"{out} has no checkpoint to resume from; start a new run without --resume.")
        saved = json.loads((out / "train_config.json").read_text())
        changed = {
            k
            for k in (
                "backend",
                "flux",
                "lora_rank",
                "size",
                "resolution",
                "patch_size",
                "gating",
                "experts",
                "local_experts",
                "batch_size",
                "seed",
            )
            if saved.get(k, getattr(TrainConfig(), k)) != getattr(config, k)
        }
        if changed:
            raise RunFolderError(
                f"--resume with other {sorted(changed)} than the run in {out}; resume with the saved config."
            )
    elif (out / DONE).exists():
        raise RunFolderError(
            f"{out} holds a finished run; pass --overwrite to replace it, or choose another --out."
        )
    elif _latest_checkpoint(out):
        raise RunFolderError(
            f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to start over."
        )
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    text = json.dumps(dataclasses.asdict(config), indent=2)
    atomic_write(out / "train_config.json", lambda path: Path(path).write_text(text))


def _latest_checkpoint(out: Path) -> Path | None:
    checkpoints = sorted((out / CHECKPOINTS).glob("step_*.pt")) if (out / CHECKPOINTS).is_dir() else []
    return checkpoints[-1] if checkpoints else None


def _save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step) -> None:
    """Everything needed to continue bit for bit, written atomically; older checkpoints beyond keep are removed."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    state = {
        "step": step,
        "model": {name: p.detach() for name, p in trainable_state(model).items()},
        "ema": ema,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    path = out / CHECKPOINTS / f"step_{step:07d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in sorted((out / CHECKPOINTS).glob("step_*.pt"))[: -config.keep_checkpoints]:
        old.unlink()


def _load_checkpoint(out, model, optimizer, scheduler, ema) -> int:
    path = _latest_checkpoint(out)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise RunFolderError(
            f"Checkpoint {path} cannot be read ({error}); delete it to resume from the one before."
        ) from None
    _load_trainable(model, state["model"], path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name, value in state["ema"].items():
        ema[name].copy_(value)
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


# --- logs, progress, pictures ---


class _CsvLog:
    FIELDS = ("step", "loss", "lr", "images_per_s", "elapsed_s")

    def __init__(self, path: Path, active: bool):
        self.path, self.active = path, active
        self.tensorboard = None
        if active:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, **row) -> None:
        if not self.active:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.tensorboard is not None:
            for key in ("loss", "lr", "images_per_s"):
                self.tensorboard.add_scalar(key, row[key], row["step"])


def _progress(total: int, initial: int, active: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", disable=not active)


SAMPLE_PROMPTS = (
    "She has long wavy blond hair and is wearing lipstick. She is smiling.",
    "He has short black hair and is wearing eyeglasses.",
    "She has straight red hair and bangs and is wearing earrings.",
    "He is bald and has a big nose. He is smiling.",
)


def sample_grid(pipe: FaceMoGLEPipeline, dataset, count: int = 4, steps: int = 20) -> Image.Image:
    """Rows of: coloured mask | mask only | text only | text + mask, for fixed masks and prompts."""
    from .images import image_grid
    from .labels import colorize

    rows = []
    for k in range(min(count, len(dataset))):
        labels = dataset[k]["labels"].numpy().astype(np.uint8)
        prompt = SAMPLE_PROMPTS[k % len(SAMPLE_PROMPTS)]
        row = [colorize(labels)]
        for mode_prompt, mode_mask in ((None, labels), (prompt, None), (prompt, labels)):
            row += pipe(prompt=mode_prompt, mask=mode_mask, num_inference_steps=steps, seed=k)
        rows.append(row)
    return image_grid(rows)


def loss_curve(log_path: Path, size: tuple[int, int] = (640, 360)) -> Image.Image:
    """A plot of the training loss (raw and smoothed) against steps from log.csv."""
    with log_path.open() as f:
        latest = {
            int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)
        }  # a resumed run logs some steps again
    steps = np.array(sorted(latest), dtype=float)
    losses = np.array([latest[int(s)] for s in steps])
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 60, 20, size[0] - 20, size[1] - 40
    draw.rectangle((left, top, right, bottom), outline="black")
    if len(steps) < 2:
        return image
    low, high = float(losses.min()), float(np.percentile(losses, 98))
    high = high if high > low else low + 1e-6

    def xy(s, v):
        return left + (s - steps[0]) / max(1e-9, steps[-1] - steps[0]) * (right - left), bottom - (
            min(v, high) - low
        ) / (high - low) * (bottom - top)

    draw.line([xy(s, v) for s, v in zip(steps, losses)], fill=(170, 190, 230), width=1)
    window = max(1, len(losses) // 30)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    draw.line([xy(s, v) for s, v in zip(steps[window - 1 :], smooth)], fill=(20, 60, 160), width=2)
    for value in (low, (low + high) / 2, high):
        draw.text((5, xy(steps[0], value)[1] - 6), f"{value:.4f}", fill="black")
    draw.text((left, bottom + 10), f"step {int(steps[0])}", fill="black")
    draw.text((right - 80, bottom + 10), f"step {int(steps[-1])}", fill="black")
    draw.text((left + 10, top + 5), "training loss (light: logged, dark: smoothed)", fill="black")
    return image
