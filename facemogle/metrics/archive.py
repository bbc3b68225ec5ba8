"""An evaluation kept small enough to commit: its scores, per-item counts, generation records and first
images, without the thousands of generated images. Long benchmarks (the ablation table, the sampling curve)
run across sessions whose run folders do not survive: each finished evaluation is kept with what it was made
for, and a later session restores it into its run folder (where `facemogle compare` and its grid read it)
instead of making it again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..io import read_json, write_json
from .report import PER_ITEM, find_image, mode_folder

KEPT_FILES = ("report.json", PER_ITEM, "report.md")
GENERATION = "generation.json"  # in each mode's folder: what made its images (eval refuses others)
MADE_FOR = "made_for.json"  # what the benchmark made the evaluation for; a restore asks for the same
KEPT_IMAGES = 8  # per mode: the rows of compare's grid


def evaluators_fingerprint() -> str:
    """The shipped parser's and classifier's weights (features scored by other evaluators do not pair)."""
    from ..evaluators import default_evaluator_folder
    from ..pipeline import model_fingerprint

    return "-".join(
        model_fingerprint(default_evaluator_folder(kind))[:12] for kind in ("parser", "classifier")
    )


class ArchiveError(ValueError):
    """A kept evaluation made for something else, or a run folder holding another evaluation."""


def archive_evaluation(
    folder: str | os.PathLike, archive: str | os.PathLike, made_for: dict, images: int = KEPT_IMAGES
) -> None:
    """Keep a finished `facemogle eval` folder's small files, each mode's generation record and first
    `images` images, and `made_for`, in `archive`, replacing it whole (written beside it, then renamed, so
    an interrupted copy never looks kept)."""
    folder, archive = Path(folder), Path(archive)
    report = read_json(folder / "report.json")
    with np.load(folder / PER_ITEM) as arrays:
        stems = [str(stem) for stem in arrays["stems"][:images]]
    partial = archive.with_name(archive.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in KEPT_FILES:
        shutil.copy2(folder / name, partial / name)
    modes = tuple(report["modes"])
    for mode in modes:
        source = mode_folder(folder, report["images"], mode, modes)
        kept = [source / GENERATION] if (source / GENERATION).is_file() else []
        kept += [find_image(source, stem) for stem in stems]
        for path in kept:
            (partial / mode).mkdir(exist_ok=True)
            shutil.copy2(path, partial / mode / path.name)
    write_json(partial / MADE_FOR, made_for)
    if archive.exists():
        shutil.rmtree(archive)
    partial.rename(archive)


def restore_evaluation(archive: str | os.PathLike, folder: str | os.PathLike, made_for: dict) -> bool:
    """Copy the evaluation kept in `archive` into the run folder `folder`; False when none is kept there.
    One made for something else, or a run folder holding another evaluation, is an ArchiveError."""
    archive, folder = Path(archive), Path(folder)
    if not all((archive / name).is_file() for name in (*KEPT_FILES, MADE_FOR)):
        return False
    kept = read_json(archive / MADE_FOR)
    if kept != made_for:
        differ = ", ".join(f"{key} {kept.get(key)!r} (asked: {made_for.get(key)!r})"
                           for key in sorted(set(kept) | set(made_for)) if kept.get(key) != made_for.get(key))  # fmt: skip
        raise ArchiveError(
            f"{archive} holds an evaluation made for other settings: {differ}. Pass another --results folder "
            f"(or remove {archive})."
        )
    if (folder / "report.json").is_file() and read_json(folder / "report.json") != read_json(
        archive / "report.json"
    ):
        raise ArchiveError(
            f"{folder} holds another evaluation than the one kept in {archive}; pass another --runs folder (or "
            f"remove {folder})."
        )
    shutil.copytree(archive, folder, dirs_exist_ok=True)
    return True
