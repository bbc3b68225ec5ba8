"""CLIP score (text consistency) and CMMD (realism) with a CLIP model from a local folder.

CLIP score: 100 × max(cos(image embedding, prompt embedding), 0), averaged (as torchmetrics and the
paper, which uses ViT-B/16). CMMD (Jayasumana et al. 2024): squared MMD with a Gaussian kernel
(σ = 10) between L2-normalised CLIP image embeddings, × 1000 (the paper uses ViT-L/14-336).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import MetricUnavailable

CLIP_FILES = "config.json, model weights, tokenizer and preprocessor_config.json"


class ClipEmbedder:
    """A transformers CLIPModel with its tokenizer and image processor, all from one local folder."""

    def __init__(self, folder: str | os.PathLike, option: str = "--clip"):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        help_ = f"a CLIP model folder in the Hugging Face layout ({CLIP_FILES}); pass it with {option} FOLDER"
        if not Path(folder).is_dir():
            raise MetricUnavailable(f"{folder} is not a folder; CLIP metrics need {help_}.")
        try:
            self.model = CLIPModel.from_pretrained(folder).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.processor = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError) as error:
            raise MetricUnavailable(
                f"{folder} is not a usable CLIP folder ({str(error)[:200]}); CLIP metrics need {help_}."
            ) from error
        self.name = str(folder)

    @torch.no_grad()
    def images(self, images: list[Image.Image], batch: int = 32) -> torch.Tensor:
        """L2-normalised image embeddings [N, D]."""
        out = []
        for start in range(0, len(images), batch):
            pixels = self.processor(images=images[start : start + batch], return_tensors="pt")["pixel_values"]
            out.append(
                self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)
            )
        return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def texts(self, prompts: list[str], batch: int = 64) -> torch.Tensor:
        """L2-normalised text embeddings [N, D]; prompts longer than the model's window are truncated."""
        out = []
        length = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        for start in range(0, len(prompts), batch):
            tokens = self.tokenizer(prompts[start : start + batch], padding=True, truncation=True,
                                    max_length=length, return_tensors="pt")  # fmt: skip
            output = self.model.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            out.append(self.model.text_projection(output.pooler_output))
        return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)


def load_clip(folder: str | os.PathLike | None, option: str = "--clip") -> ClipEmbedder:
    if folder is None:
        raise MetricUnavailable(
            f"CLIP score and CMMD need a CLIP model folder in the Hugging Face layout ({CLIP_FILES}, e.g. "
            f"openai/clip-vit-base-patch16 downloaded beforehand); pass it with {option} FOLDER."
        )
    return ClipEmbedder(folder, option)


def clip_score(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> float:
    """Mean of 100 × max(cos, 0) over matched (image, prompt) pairs; embeddings L2-normalised [N, D]."""
    cosine = (image_embeddings * text_embeddings).sum(-1)
    return float((100 * cosine.clamp(min=0)).mean())


def cmmd(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, sigma: float = 10.0, scale: float = 1000.0
) -> float:
    """Squared MMD with a Gaussian kernel between embedding sets a [N, D] and b [M, D] (CMMD's estimator)."""
    x, y = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    gamma = 1.0 / (2 * sigma**2)

    def kernel_mean(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        distances = (p * p).sum(1)[:, None] + (q * q).sum(1)[None] - 2 * p @ q.T  # [N, M]
        return torch.exp(-gamma * distances).mean()

    return float(scale * (kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)))
