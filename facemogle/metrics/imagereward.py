"""ImageReward (Xu et al. 2023), the paper's human-preference score, when its package and weights are local."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from . import MetricUnavailable

IMAGEREWARD_HELP = (
    "the image-reward package (pip install image-reward), a folder with ImageReward.pt and med_config.json "
    "(from THUDM/ImageReward) passed with --imagereward FOLDER, and bert-base-uncased in the Hugging Face "
    "cache (its BLIP tokenizer loads it by name)"
)


def load_imagereward(folder: str | os.PathLike | None):
    """The ImageReward model from a local folder; MetricUnavailable with what is missing otherwise."""
    if folder is None:
        raise MetricUnavailable(f"ImageReward needs {IMAGEREWARD_HELP}.")
    weights, config = Path(folder) / "ImageReward.pt", Path(folder) / "med_config.json"
    missing = [str(p) for p in (weights, config) if not p.is_file()]
    if missing:
        raise MetricUnavailable(f"ImageReward: missing {', '.join(missing)}; it needs {IMAGEREWARD_HELP}.")
    try:
        import ImageReward
    except ImportError as error:
        raise MetricUnavailable(
            f"ImageReward: the package is not installed; it needs {IMAGEREWARD_HELP}."
        ) from error
    try:
        return ImageReward.load(str(weights), device="cpu", med_config=str(config))
    except (
        Exception
    ) as error:  # e.g. bert-base-uncased not cached offline: report, never crash the evaluation
        raise MetricUnavailable(
            f"ImageReward failed to load ({type(error).__name__}: {str(error)[:200]}); it needs {IMAGEREWARD_HELP}."
        ) from error


def image_reward(model, images: list[Image.Image], prompts: list[str]) -> float:
    """Mean ImageReward score of each image for its prompt."""
    scores = [float(model.score(prompt, image)) for image, prompt in zip(images, prompts, strict=True)]
    return sum(scores) / len(scores)
