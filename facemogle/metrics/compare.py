"""`facemogle compare`: evaluations of several models on the same items, each against the first, with
paired bootstrap intervals of the differences (ablations: the same items and seeds, so the per-item
noise cancels and smaller differences are resolved than by comparing each score's own interval)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .attributes import hit_rate
from .bootstrap import LEVEL, bootstrap_interval
from .fid import frechet_distance
from .mask import miou
from .report import PER_ITEM, find_image, load_items, mode_folder, sample_sheet

PAIRED = {"confusion": ("miou", miou), "attributes": ("accuracy", hit_rate)}  # per-item counts → score
FRECHET_DRAWS = 200  # two 256-d Fréchet distances per draw


class CompareError(ValueError):
    """Evaluation folders that cannot be compared; the message names the folder and the fix."""


def load_evaluation(folder: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """report.json and the per-item counts of one `facemogle eval --out` folder."""
    folder = Path(folder)
    if not (folder / "report.json").is_file():
        raise CompareError(f"{folder} holds no report.json: give the --out folder of `facemogle eval`.")
    if not (folder / PER_ITEM).is_file():
        raise CompareError(
            f"{folder} holds no {PER_ITEM} (written by facemogle eval since per-item counts were added): run the "
            f"same `facemogle eval ... --out {folder}` again; it reuses the generated images and only rescores them."
        )
    with np.load(folder / PER_ITEM) as arrays:
        return json.loads((folder / "report.json").read_text()), dict(arrays)


def compare(folders: list[str | os.PathLike]) -> list[dict]:
    """One row per (evaluation, mode): its scores and, for the later evaluations where the first has the same
    mode, the difference from the first with a 95% paired bootstrap interval over items."""
    evaluations = [load_evaluation(folder) for folder in folders]
    base_report, base = evaluations[0]
    rows = []
    for index, (folder, (report, arrays)) in enumerate(zip(folders, evaluations)):
        _check_same_items(folders[0], base_report, base, folder, report, arrays)
        for mode, result in report["modes"].items():
            row = {"eval": str(folder), "mode": mode, "n": result["n"], "frechet": result["frechet"]}
            for counts, (name, statistic) in PAIRED.items():
                key = f"{mode}/{counts}"
                if key not in arrays:
                    continue
                row[name] = statistic(arrays[key].sum(0))
                if index > 0 and key in base:
                    row[f"{name}_difference"], row[f"{name}_difference_interval"] = paired_difference(
                        base[key], arrays[key], statistic
                    )
            features = f"{mode}/features"
            if index > 0 and features in arrays and features in base and "reference/features" in base:
                row["frechet_difference"], row["frechet_difference_interval"] = paired_frechet(
                    base[features], arrays[features], base["reference/features"]
                )
            rows.append(row)
    return rows


def paired_frechet(
    first: np.ndarray, second: np.ndarray, real: np.ndarray, seed: int = 0
) -> tuple[float, list[float]]:
    """Fréchet(second, real) − Fréchet(first, real) over the same items, with a 95% paired bootstrap
    interval: each resample draws an item's features in both evaluations and its real face's together.

    first, second, real: [N, D] features of the same N items, in item order."""

    def difference(index: np.ndarray) -> float:
        return frechet_distance(
            second[index].astype(np.float64), real[index].astype(np.float64)
        ) - frechet_distance(first[index].astype(np.float64), real[index].astype(np.float64))

    rng = np.random.default_rng(seed)
    n = len(first)
    values = [difference(rng.integers(0, n, n)) for _ in range(FRECHET_DRAWS)]
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return difference(np.arange(n)), [float(low), float(high)]


def paired_difference(
    first: np.ndarray, second: np.ndarray, statistic: Callable[[np.ndarray], float]
) -> tuple[float, list[float]]:
    """statistic(second) − statistic(first) over the same items, with its 95% paired bootstrap interval.

    first, second: [N, ...] additive per-item counts of the same N items (a resample draws both of an item).
    """
    paired = np.stack([first, second], axis=1)  # [N, 2, ...]

    def difference(total: np.ndarray) -> float:
        return statistic(total[1]) - statistic(total[0])

    return difference(paired.sum(0)), bootstrap_interval(paired, difference)


def compare_grid(folders: list[str | os.PathLike], rows: int = 8) -> Image.Image:
    """Rows: the first `rows` items; columns: mask | each evaluation's image per mode, in order | real face."""
    evaluations = [load_evaluation(folder) for folder in folders]
    generated = {}
    for folder, (report, arrays) in zip(folders, evaluations):
        modes = tuple(report["modes"])
        for mode in modes:
            images = mode_folder(Path(folder), report["images"], mode, modes)
            generated[f"{folder}/{mode}"] = [
                Image.open(find_image(images, stem)).convert("RGB") for stem in arrays["stems"][:rows]
            ]
    first = evaluations[0][0]
    resolution = next(iter(generated.values()))[0].width
    return sample_sheet(load_items(first["data"], first["split"], rows, resolution), generated)


def _check_same_items(base_folder, base_report: dict, base: dict, folder, report: dict, arrays: dict) -> None:
    settings = ("data", "split", "n", "seed")
    differing = [k for k in settings if report.get(k) != base_report.get(k)]
    if differing or not np.array_equal(arrays["stems"], base["stems"]):
        what = (
            ", ".join(f"{k} {report.get(k)} vs {base_report.get(k)}" for k in differing) or "different items"
        )
        raise CompareError(
            f"{folder} and {base_folder} were not evaluated on the same items ({what}): rerun facemogle eval "
            f"with the same --data, --split, --n and --seed for both."
        )


def compare_markdown(rows: list[dict]) -> str:
    """The rows as a markdown table; differences are against the first evaluation."""
    lines = [
        f"Differences against {rows[0]['eval']} on the same {rows[0]['n']} items, with 95% paired bootstrap "
        "intervals (1,000 resamplings of the items; Fréchet's 200, each drawing the items' real faces too).",
        "",
        "| evaluation | mode | mIoU ↑ | Δ mIoU | attribute acc ↑ | Δ acc | Fréchet ↓ | Δ Fréchet |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['eval']} | {row['mode']} | {_value(row, 'miou')} | {difference_cell(row, 'miou')} | "
            f"{_value(row, 'accuracy')} | {difference_cell(row, 'accuracy')} | {row['frechet']:.1f} | "
            f"{difference_cell(row, 'frechet', 1)} |"
        )
    return "\n".join(lines) + "\n"


def _value(row: dict, name: str) -> str:
    return f"{row[name]:.3f}" if name in row else "–"


def difference_cell(row: dict, name: str, digits: int = 3) -> str:
    """A row's difference from the first evaluation with its paired interval, or – without one."""
    if f"{name}_difference" not in row:
        return "–"
    low, high = row[f"{name}_difference_interval"]
    return f"{row[f'{name}_difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
