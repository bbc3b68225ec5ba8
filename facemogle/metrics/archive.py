"""An evaluation kept small enough to commit: its scores, per-item counts and first images, without the
thousands of generated images. Long benchmarks (the ablation table, the sampling curve) run across
sessions whose run folders do not survive: each finished evaluation is archived, and a later session
restores it into its run folder (where `facemogle compare` and its grid read it) instead of generating
it again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..io import read_json
from .report import PER_ITEM, find_image, mode_folder

KEPT_FILES = ("report.json", PER_ITEM, "generation.json", "report.md")
KEPT_IMAGES = 8  # per mode: the rows of compare's grid


def archive_evaluation(
    folder: str | os.PathLike, archive: str | os.PathLike, extra=(), images: int = KEPT_IMAGES
) -> None:
    """Copy a finished `facemogle eval` folder's small files, each mode's first images and the `extra`
    files (e.g. the model's train_config.json) into `archive`, replacing it whole (written beside it, then
    renamed, so an interrupted copy never looks finished)."""
    folder, archive = Path(folder), Path(archive)
    report = read_json(folder / "report.json")
    with np.load(folder / PER_ITEM) as arrays:
        stems = [str(stem) for stem in arrays["stems"][:images]]
    partial = archive.with_name(archive.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in [folder / name for name in KEPT_FILES] + [Path(p) for p in extra]:
        if path.is_file():
            shutil.copy2(path, partial / path.name)
    modes = tuple(report["modes"])
    for mode in modes:
        (partial / mode).mkdir()
        for stem in stems:
            image = find_image(mode_folder(folder, report["images"], mode, modes), stem)
            shutil.copy2(image, partial / mode / image.name)
    if archive.exists():
        shutil.rmtree(archive)
    partial.rename(archive)


def archived(archive: str | os.PathLike) -> dict | None:
    """The report of the evaluation kept in `archive`; None when it holds none."""
    archive = Path(archive)
    if not ((archive / "report.json").is_file() and (archive / PER_ITEM).is_file()):
        return None
    return read_json(archive / "report.json")


def restore_evaluation(archive: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Copy an archived evaluation into `folder` (its run folder), where compare reads it."""
    shutil.copytree(archive, folder, dirs_exist_ok=True)
