"""The training loop (Hugging Face accelerate): one process on CPU by default, DDP under `accelerate launch`.

    facemogle train --config configs/default.yaml                # one process
    facemogle train --config configs/default.yaml --resume       # continue after an interruption
    accelerate launch --multi_gpu --num_processes 8 -m facemogle.cli train --config configs/default.yaml

The last runs 8 processes, one per GPU (`--batch-size` is per process); the README's "Training" section
has the one-GPU and multi-node commands.

Determinism: every random draw of a step (data order, captions, noise, t, modality dropout) comes from the
run's seed and the step number, for the whole global batch, and each process takes its own slice. So a run
resumed from a checkpoint continues bit for bit, and N processes reach the weights of one process with
the same global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..flow import ModalityDropout
from ..model import Denoiser, StepRandomness
from ..pipeline import FaceMoGLEPipeline
from ..precision import resolve_mixed_precision
from .build import build_model, build_optimizer, ema_weights, trainable_state, update_ema
from .checkpoints import (
    DONE,
    FINAL_MODEL,
    load_checkpoint,
    load_initial_weights,
    prepare_run_folder_on_main,
    save_checkpoint,
    write_training_record,
)
from .config import TrainConfig
from .logs import CsvLog, loss_curve, progress_bar, sample_grid


class TrainingObjective(torch.nn.Module):
    """The loss as a module's forward, so that DDP (through accelerate) sees a forward pass."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.model = model

    def forward(self, images, labels, text, null_text, randomness, condition_tokens=None, image_tokens=None):
        return self.model.loss(images, labels, text, null_text, randomness, condition_tokens, image_tokens)


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
    prepare_run_folder_on_main(accelerator, out, config, resume, overwrite)
    dataset = _open_dataset(config)
    model, text_encoder = build_model(config, accelerator.device)
    if config.init_from and not resume:
        load_initial_weights(model, config)
    null_text = text_encoder.encode([""]).to(accelerator.device)
    cache = _condition_cache(config, model, dataset, accelerator)
    text_cache = _text_cache(config, text_encoder, dataset, accelerator)
    objective = TrainingObjective(model)
    optimizer = build_optimizer(config, trainable_state(model).values())
    # Not given to accelerate, which would step it once per process: the schedule counts optimizer steps.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup))
    )
    objective, optimizer = accelerator.prepare(objective, optimizer)
    ema = {k: v.detach().clone().float() for k, v in trainable_state(model).items()}
    step = config.start_step
    if resume:
        step = load_checkpoint(out, model, optimizer, scheduler, ema, accelerator.num_processes)
    order = DataOrder(len(dataset), config.seed)
    global_batch = config.batch_size * accelerator.num_processes
    dropout = ModalityDropout(config.drop_text, config.drop_mask, config.drop_local)
    log = CsvLog(out / "log.csv", accelerator.is_main_process, from_step=step)
    bar = progress_bar(config.steps, step, accelerator.is_main_process)
    started, seen = time.perf_counter(), 0
    interrupted = False
    with _stop_requests() as stop:
        while step < config.steps and (stop_at is None or step < stop_at):
            if _stop_requested(stop, accelerator):
                interrupted = True
                break
            objective.train()
            for micro in range(config.grad_accum):
                micro_index = step * config.grad_accum + micro
                positions = order.batch(micro_index, global_batch)
                mine = slice(
                    accelerator.process_index * config.batch_size,
                    (accelerator.process_index + 1) * config.batch_size,
                )
                images, labels, captions, stems = _collate(
                    [dataset.item(i, epoch) for i, epoch in positions[mine]], accelerator.device
                )
                randomness = StepRandomness.draw(
                    config.seed,
                    micro_index,
                    global_batch,
                    model.token_shape(config.resolution),
                    dropout,
                    config.time_shift,
                ).slice(mine)
                condition_tokens = cache.batch(stems, accelerator.device) if cache else None
                image_tokens = cache.images(stems, accelerator.device) if cache and cache.has_images else None
                last = micro == config.grad_accum - 1
                with (
                    contextlib.nullcontext() if last else accelerator.no_sync(objective)
                ):  # all-reduce once per step
                    with autocast:
                        text = text_cache.batch(captions) if text_cache else text_encoder.encode(captions)
                        loss = objective(
                            images,
                            labels,
                            text.to(accelerator.device),
                            null_text,
                            randomness.to(accelerator.device),
                            condition_tokens,
                            image_tokens,
                        )
                    accelerator.backward(loss / config.grad_accum)
            if config.grad_clip > 0:
                accelerator.clip_grad_norm_(objective.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += global_batch * config.grad_accum
            update_ema(ema, model, config.ema, step)
            loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
            bar.update()
            if step % config.log_every == 0 or step == config.steps:
                log.write(step=step, loss=loss_value, lr=scheduler.get_last_lr()[0], images_per_s=rate,
                          elapsed_s=time.perf_counter() - started)  # fmt: skip
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step)
            if accelerator.is_main_process and config.sample_every and step % config.sample_every == 0:
                with ema_weights(model, ema):
                    grid = sample_grid(FaceMoGLEPipeline(model, text_encoder), dataset)
                grid.save(out / "samples" / f"step_{step:07d}.png")
    bar.close()
    if step < config.steps and step % config.checkpoint_every:
        save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step)  # stopped early
    if interrupted:
        raise KeyboardInterrupt
    if step >= config.steps and accelerator.is_main_process:
        with ema_weights(model, ema):
            pipe = FaceMoGLEPipeline(model, text_encoder)
            pipe.save_pretrained(out / FINAL_MODEL)
            write_training_record(out / FINAL_MODEL, step, config, accelerator.num_processes, "ema")
            if config.sample_every:
                sample_grid(pipe, dataset).save(out / "samples" / "final.png")
        loss_curve(out / "log.csv").save(out / "loss.png")
        (out / DONE).write_text(f"finished at step {step}\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


@contextlib.contextmanager
def _stop_requests():
    """Within the block Ctrl-C and SIGTERM (a scheduler or session ending) only set the event it gives: the
    loop stops between steps, so no checkpoint holds a step half applied (weights, EMA and step disagreeing).
    Signal handlers can only be set from the main thread; elsewhere the event stays clear."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {signum: signal.signal(signum, lambda signum, frame: stop.set()) for signum in signals}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_requested(stop: threading.Event, accelerator) -> bool:
    """Whether any process was asked to stop: all of them stop after the same step."""
    if accelerator.num_processes == 1:
        return stop.is_set()
    flag = torch.tensor([float(stop.is_set())], device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() > 0


class DataOrder:
    """Sample order: a fresh seeded permutation per epoch; batch k is positions k·B … (k+1)·B − 1 of the stream."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed = length, seed
        self._epoch, self._perm = -1, None

    def batch(self, index: int, size: int) -> list[tuple[int, int]]:
        """(dataset index, epoch) of each position: the epoch draws the caption, also in a batch that
        straddles two epochs."""
        return [self._at(p) for p in range(index * size, (index + 1) * size)]

    def _at(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.length)
        if epoch != self._epoch:
            self._epoch, self._perm = (
                epoch,
                np.random.default_rng([self.seed, epoch]).permutation(self.length),
            )
        return int(self._perm[offset]), epoch


def _collate(items: list[dict], device: torch.device | str):
    images = torch.stack([item["image"] for item in items]).to(device)
    labels = torch.stack([item["labels"] for item in items]).to(device)
    return images, labels, [item["caption"] for item in items], [item["stem"] for item in items]


def _condition_cache(config: TrainConfig, model: Denoiser, dataset, accelerator):
    """The dataset's mask encodings on disk, and at full scale its image latents (the VAE mean), built by
    all processes, each its share; or None (encode each step)."""
    folder = config.condition_cache or (
        str(Path(config.out) / "condition_cache") if config.backend == "flux" else None
    )
    if folder is None:
        return None
    from ..data.cache import ConditionCache, build_condition_cache

    device = accelerator.device
    encoder = f"{config.backend}:{config.flux or model.patch_size}"

    def encode(labels: torch.Tensor) -> torch.Tensor:
        return model.mask_tokens(labels.to(device), remember=False).to("cpu", config.dtype)

    def encode_images(images: torch.Tensor) -> torch.Tensor:
        return model.encode_images(images.to(device)).to("cpu", torch.float32)

    flux = config.backend == "flux"
    build_condition_cache(
        dataset, encode, folder, encoder, encode_images=encode_images if flux else None,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
    )  # fmt: skip
    cache = ConditionCache(folder)
    cache.check(dataset, encoder)
    return cache


def _text_cache(config: TrainConfig, text_encoder, dataset, accelerator):
    """Every training caption's encoding on disk (--text-cache), built by all processes; or None."""
    if not config.text_cache:
        return None
    from ..data.cache import TextCache, build_text_cache

    encoder = f"{config.backend}:{config.flux or 'minilm'}:{getattr(text_encoder, 'max_tokens', '')}"
    captions = [caption for stem in dataset.stems for caption in dataset.captions[stem]]
    folder = Path(config.out) / "text_cache"
    build_text_cache(
        captions, text_encoder.encode, folder, encoder, dtype=config.dtype,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
    )  # fmt: skip
    return TextCache(folder, encoder)


def _open_dataset(config: TrainConfig):
    from ..data.folders import FaceMaskTextDataset

    return FaceMaskTextDataset(
        config.data,
        split="train",
        resolution=config.resolution,
        seed=config.seed,
        cache_in_memory=config.cache_in_memory and config.backend == "compact",  # 512² items: ≈ 1 MB each
    )
