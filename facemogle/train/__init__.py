"""Training: `config` (TrainConfig), `build` (model, EMA, optimizer), `loop` (train), `checkpoints` (run
folders, checkpoints, export), `logs` (log.csv, sample grids, loss curve)."""

from .build import build_model, ema_weights, trainable_state
from .checkpoints import export_model, run_config
from .config import RunFolderError, TrainConfig
from .logs import loss_curve, sample_grid
from .loop import DataOrder, TrainingObjective, train

__all__ = [
    "DataOrder",
    "RunFolderError",
    "TrainConfig",
    "TrainingObjective",
    "build_model",
    "ema_weights",
    "export_model",
    "loss_curve",
    "run_config",
    "sample_grid",
    "train",
    "trainable_state",
]
