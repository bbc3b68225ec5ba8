"""What a run shows: log.csv (and TensorBoard when installed), the progress bar, sample grids, the loss curve."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_write
from ..pipeline import FaceMoGLEPipeline


class CsvLog:
    """log.csv, one row per logged step, written by the main process (and TensorBoard scalars when installed)."""

    FIELDS = ("step", "loss", "lr", "images_per_s", "elapsed_s")

    def __init__(self, path: Path, active: bool, from_step: int = 0):
        """from_step: the step a run resumes at; rows logged after it (by a run killed after its last
        checkpoint) are dropped, as those steps are trained again."""
        self.path, self.active = path, active
        self.tensorboard = None
        if active and path.exists():
            self._keep_until(from_step)
        if active:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))

    def _keep_until(self, step: int) -> None:
        with self.path.open(newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= step]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda temporary: Path(temporary).write_text(text.getvalue()))

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


def progress_bar(total: int, initial: int, active: bool):
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
    from ..images import image_grid
    from ..labels import colorize

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
