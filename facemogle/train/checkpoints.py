"""Run folders and checkpoints: start, resume or refuse a run folder; save, find and load checkpoints; export
a model folder from one.

A checkpoint is one file, written atomically (temporary file, then rename), so the latest one is always
complete: for `--resume` after a crash, and for `export` while the run goes on. Older ones are removed only
after the new one is in place.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from ..io import atomic_write, read_json, remove_partial_writes, write_json
from ..pipeline import (
    CONFIG_FILE,
    FORMAT,
    TRAINING_FILE,
    WEIGHTS_FILE,
    FaceMoGLEPipeline,
    compact_config,
    load_weights,
    read_config,
)
from .build import build_model, trainable_state
from .config import RunFolderError, TrainConfig

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model"
DONE = "DONE"
# what --resume may change: the run's length (--steps extends it) and when it logs, saves and samples;
# any other option would silently change the run (its data, schedule, precision or random draws)
RESUME_CHANGEABLE = ("out", "steps", "log_every", "checkpoint_every", "sample_every", "keep_checkpoints",
                     "cache_in_memory", "gradient_checkpointing")  # fmt: skip
# what a run writes in its folder; --overwrite deletes a folder only when it holds nothing else
RUN_ENTRIES = ("train_config.json", "DONE", "log.csv", "loss.png", CHECKPOINTS, "samples", FINAL_MODEL,
               "tensorboard", "condition_cache", "text_cache")  # fmt: skip


def prepare_run_folder_on_main(
    accelerator, out: Path, config: TrainConfig, resume: bool, overwrite: bool
) -> None:
    """prepare_run_folder on the main process; every process learns its outcome (the broadcast is also the
    barrier), so a folder refused there stops them all with its reason instead of leaving them waiting."""
    from accelerate.utils import broadcast_object_list

    error = None
    if accelerator.is_main_process:
        try:
            prepare_run_folder(out, config, resume, overwrite, accelerator.num_processes)
        except Exception as caught:  # noqa: BLE001 - whatever stops the main process must stop the others
            error = caught
    message = broadcast_object_list([None if error is None else str(error)])[0]
    if error is not None:
        raise error
    if message is not None:
        raise RunFolderError(message)


def prepare_run_folder(
    out: Path, config: TrainConfig, resume: bool, overwrite: bool, processes: int = 1
) -> None:
    """Check that `out` can hold this run as asked (new, resumed or overwritten) and that its --init-from
    folder fits it, before anything is deleted; write train_config.json."""
    if resume and overwrite:
        raise RunFolderError("pass --resume (continue the run) or --overwrite (start it over), not both.")
    if config.init_from and not resume:
        check_initial_weights(config, processes)
    if resume:
        _check_resumable(out, config)
        (out / DONE).unlink(missing_ok=True)  # a finished run given more --steps is unfinished again
        remove_partial_writes(out / CHECKPOINTS)  # a save killed mid-write (never loaded)
    else:
        _check_run_or_empty(out)
        if out.exists() and overwrite:
            shutil.rmtree(out)
        elif (out / DONE).exists():
            raise RunFolderError(
                f"{out} holds a finished run; pass --overwrite to replace it, or choose another --out."
            )
        elif latest_checkpoint(out):
            raise RunFolderError(
                f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to start over."
            )
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    write_json(out / "train_config.json", dataclasses.asdict(config))


def run_config(out: str | os.PathLike) -> TrainConfig:
    """The options of the run in `out` (its train_config.json): what --resume continues with."""
    path = Path(out) / "train_config.json"
    if not path.is_file():
        raise RunFolderError(
            f"{out} has no train_config.json, so no run to resume; start one without --resume."
        )
    return TrainConfig.load(path)


def _check_resumable(out: Path, config: TrainConfig) -> None:
    """A checkpoint to resume from, the run's options but RESUME_CHANGEABLE, and steps left to train."""
    checkpoint = latest_checkpoint(out)
    if not checkpoint:
        raise RunFolderError(f"{out} has no checkpoint to resume from; start a new run without --resume.")
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RESUME_CHANGEABLE]
    changed = _changed_options(
        dataclasses.asdict(config), read_json(out / "train_config.json"), names, "the run's"
    )
    if changed:
        raise RunFolderError(
            f"--resume continues the run in {out} with its own options; leave out {', '.join(changed)}."
        )
    step = int(checkpoint.stem.removeprefix("step_"))
    if config.steps <= step and (out / DONE).exists():
        raise RunFolderError(
            f"{out} holds a run finished at step {step}: nothing to resume. Pass --steps with more than {step} "
            "to train it further, or --overwrite to start over."
        )
    if config.steps < step:
        raise RunFolderError(f"{out} is at step {step} already; pass --steps with more than {step}.")
    # config.steps == step without DONE: stopped while writing the final model; resuming writes it


def _check_run_or_empty(out: Path) -> None:
    """A new run starts, and --overwrite deletes, only in a folder that is absent, empty or a training run:
    train_config.json and nothing but RUN_ENTRIES (and temporary files of interrupted atomic writes)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a training run folder; choose another --out.")
    names = [p.name for p in out.iterdir()]
    if names and "train_config.json" not in names:
        raise RunFolderError(
            f"{out} is not empty and not a training run folder (it has no train_config.json); nothing was "
            "deleted: choose another --out."
        )
    foreign = sorted(
        n for n in names if n not in RUN_ENTRIES and not (n.startswith(".") and n.endswith(".tmp"))
    )
    if foreign:
        raise RunFolderError(
            f"{out} holds {foreign}, which a training run does not write; nothing was deleted: move them "
            "away, or choose another --out."
        )


def latest_checkpoint(out: Path) -> Path | None:
    checkpoints = sorted((out / CHECKPOINTS).glob("step_*.pt")) if (out / CHECKPOINTS).is_dir() else []
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator, out, config, model, optimizer, scheduler, ema, step) -> None:
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
        "processes": accelerator.num_processes,  # the global batch and data order depend on it
    }
    path = out / CHECKPOINTS / f"step_{step:07d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in sorted((out / CHECKPOINTS).glob("step_*.pt"))[: -config.keep_checkpoints]:
        old.unlink()


def load_checkpoint(out, model, optimizer, scheduler, ema, processes: int = 1) -> int:
    """Restore the latest checkpoint of `out` into the model, optimizer, scheduler, EMA and RNG; returns its step.

    processes: how many the run continues on; another count than the checkpoint's is refused (it would
    change the global batch, hence the data order and every step's draws)."""
    path = latest_checkpoint(out)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise RunFolderError(
            f"Checkpoint {path} cannot be read ({error}); delete it to resume from the one before."
        ) from None
    saved = state.get("processes", processes)
    if saved != processes:
        raise RunFolderError(
            f"{out} was trained on {saved} processes; resuming on {processes} would change its global batch "
            f"and data order. Launch it with {saved} processes (accelerate launch --num_processes {saved})."
        )
    _load_trainable(model, state["model"], path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name, value in state["ema"].items():
        ema[name].copy_(value)
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _load_trainable(model: torch.nn.Module, state: dict, path: Path) -> None:
    expected = set(trainable_state(model))
    if set(state) != expected:
        raise RunFolderError(
            f"Checkpoint {path} does not match the run's model ({len(set(state) ^ expected)} parameter names "
            "differ); was train_config.json edited? Resume or export with the config the run was started with."
        )
    model.load_state_dict(state, strict=False)


def export_model(
    run: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype | None = None, ema: bool = True
) -> int:
    """Write a model folder from a run's latest checkpoint (EMA weights by default), finished or not; returns its step."""
    run = Path(run)
    path = latest_checkpoint(run)
    if path is None:
        raise RunFolderError(f"{run} has no checkpoint to export; is it a training run folder?")
    config = TrainConfig(**read_json(run / "train_config.json"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model, text_encoder = build_model(config, "cpu")
    _load_trainable(model, state["ema"] if ema else state["model"], path)
    FaceMoGLEPipeline(model, text_encoder).save_pretrained(out, dtype=dtype)
    step = int(state["step"])
    write_training_record(out, step, config, state.get("processes", 1), "ema" if ema else "raw")
    return step


def write_training_record(folder, step: int, config: TrainConfig, processes: int, weights: str) -> None:
    """training.json in a model folder: the step its weights are of and the run that made them (what
    --init-from with --start-step checks a later stage against)."""
    record = {
        "step": step,
        "weights": weights,
        "processes": processes,
        "train_config": dataclasses.asdict(config),
    }
    write_json(Path(folder) / TRAINING_FILE, record)


def check_initial_weights(config: TrainConfig, processes: int) -> None:
    """Before the run folder is touched: --init-from is a compact model folder of this run's architecture
    and, with --start-step, was exported at that step of a run with this one's data order and draws."""
    folder = Path(config.init_from)
    if not (folder / CONFIG_FILE).is_file():
        raise RunFolderError(
            f"--init-from {folder} is not a model folder (no {CONFIG_FILE}); pass a folder that "
            "`facemogle export` wrote."
        )
    saved = read_config(folder)
    if saved.pop("format") != FORMAT:
        raise RunFolderError(f"--init-from {folder} holds a full-scale model; pass a compact model folder.")
    theirs = _flat(compact_config(saved, folder / CONFIG_FILE).to_dict())  # older folders: defaults filled in
    ours = _flat(config.model_config().to_dict())
    differ = [
        f"{key}: {theirs[key]!r} (the run's: {ours[key]!r})"
        for key in ours
        if not key.startswith("sampling.") and theirs[key] != ours[key]
    ]
    if differ:
        raise RunFolderError(
            f"--init-from {folder} is another model than this run's ({'; '.join(differ)}); pass the config "
            "options it was trained with."
        )
    if config.start_step:
        _check_taken_up(folder, config, processes)


def _flat(config: dict, prefix: str = "") -> dict:
    """{"mogle": {"gating": …}} → {"mogle.gating": …}."""
    out = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


# what a run's batches and draws at a step depend on besides the step: a stage that takes up a run keeps them
ORDER_FIELDS = (
    "seed",
    "batch_size",
    "grad_accum",
    "time_shift",
    "drop_text",
    "drop_mask",
    "drop_local",
    "ema",
)


def _check_taken_up(folder: Path, config: TrainConfig, processes: int) -> None:
    """--start-step N takes up the run the folder was exported from: its step, and what shapes its draws."""
    record = _training_record(folder)
    if record is None:
        return  # exported before training.json existed: the given step is taken on trust
    step = record.get("step")
    if config.start_step != step:
        raise RunFolderError(
            f"--init-from {folder} was exported at step {step}; pass --start-step {step} to take up its run "
            "there, or 0 to start a new run from its weights."
        )
    ours = {**dataclasses.asdict(config), "processes": processes}
    theirs = {**record.get("train_config", {}), "processes": record.get("processes", 1)}
    differ = _changed_options(ours, theirs, (*ORDER_FIELDS, "processes"), "its run's")
    if differ:
        raise RunFolderError(
            f"--start-step {step} takes up the run {folder} was exported from, whose batches and draws depend "
            f"on what this run changes: {', '.join(differ)}. Pass its values, or --start-step 0 to start a new "
            "run from its weights."
        )


def _changed_options(ours: dict, saved: dict, names, whose: str) -> list[str]:
    """ "--flag value (whose: saved value)" for each of `names` where this run's option differs from a saved
    run's (an option a saved config lacks has its default)."""
    saved = {**dataclasses.asdict(TrainConfig()), **saved}
    return [f"--{name.replace('_', '-')} {ours[name]} ({whose}: {saved[name]})" for name in names
            if ours[name] != saved[name]]  # fmt: skip


def _training_record(folder: Path) -> dict | None:
    path = folder / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} cannot be read ({error}); export the folder again.") from None
    if not isinstance(record, dict):
        raise RunFolderError(f"{path} is not a training record (a JSON object); export the folder again.")
    return record


def load_initial_weights(model: torch.nn.Module, config: TrainConfig) -> None:
    """The weights of the --init-from folder (checked by check_initial_weights) in place of random ones."""
    load_weights(model, Path(config.init_from) / WEIGHTS_FILE)
