"""DINO structure distance: the paper's mask-consistency metric ("Splicing ViT Features", Tumanyan et al.).

The keys of a DINO-ViT's last attention layer (heads concatenated) give a token × token cosine
self-similarity matrix that describes an image's layout but not its appearance; the structure distance
between a generated face and the real face of the same mask is the mean squared difference of the two
matrices. Reported as a per-image mean (the authors' script sums over batches of 64, ≈ 64× larger).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from . import MetricUnavailable

DINO_HELP = (
    "a DINO ViT folder in the Hugging Face layout (config.json, model weights, preprocessor_config.json; the "
    "paper uses facebook/dino-vitb8 downloaded beforehand); pass it with --dino FOLDER"
)


class DinoKeys:
    """Self-similarity of the last layer's keys of a transformers ViT loaded from a local folder."""

    def __init__(self, folder: str | os.PathLike):
        from transformers import AutoImageProcessor, AutoModel

        if not Path(folder).is_dir():
            raise MetricUnavailable(
                f"{folder} is not a folder; the DINO structure distance needs {DINO_HELP}."
            )
        try:
            self.model = AutoModel.from_pretrained(folder).eval()
            self.processor = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError) as error:
            raise MetricUnavailable(
                f"{folder} is not a usable DINO folder ({str(error)[:200]}); the metric needs {DINO_HELP}."
            ) from error
        key_layers = [m for name, m in self.model.named_modules() if name.endswith(("k_proj", ".key"))]
        if not key_layers:
            raise MetricUnavailable(
                f"{folder} holds no ViT with key projections; the metric needs {DINO_HELP}."
            )
        self.last_keys = key_layers[-1]

    @torch.no_grad()
    def self_similarity(self, images: list[Image.Image], batch: int = 16) -> torch.Tensor:
        """[N, T, T] cosine self-similarity of the last layer's keys (T tokens, class token included)."""
        captured: list[torch.Tensor] = []
        handle = self.last_keys.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            for start in range(0, len(images), batch):
                pixels = self.processor(images=images[start : start + batch], return_tensors="pt")[
                    "pixel_values"
                ]
                self.model(pixel_values=pixels)
        finally:
            handle.remove()
        out = []
        for keys in captured:
            keys = torch.nn.functional.normalize(keys.float(), dim=-1)  # [B, T, heads × head_dim]
            out.append(keys @ keys.transpose(1, 2))  # [B, T, T]
        return torch.cat(out)

    def distance(self, generated: list[Image.Image], real: list[Image.Image], batch: int = 16) -> float:
        """Mean structure distance over (generated, real) pairs, a batch at a time (the matrices are large)."""
        values = [
            structure_distances(
                self.self_similarity(generated[s : s + batch]), self.self_similarity(real[s : s + batch])
            )
            for s in range(0, len(generated), batch)
        ]
        return float(torch.cat(values).mean())


def load_dino(folder: str | os.PathLike | None) -> DinoKeys:
    if folder is None:
        raise MetricUnavailable(f"The DINO structure distance needs {DINO_HELP}.")
    return DinoKeys(folder)


def structure_distances(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of self-similarity matrices [N, T, T], per image → [N]."""
    return ((generated - real) ** 2).mean(dim=(1, 2))
