"""Pixel-space latents for the compact scale: an image is its own latent, patchified into tokens.

Masks are encoded the same way as images, as the paper does with the VAE: each of the 20 condition
images of `split_mask` (the global map in its palette colours, 19 binary maps in white on black),
scaled to [-1, 1] and patchified, so condition and image tokens share one token space (C = 3·p²).
"""

from __future__ import annotations

import torch

from .labels import split_mask


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[..., C, H, W] → [..., (H/p)·(W/p), C·p·p], row-major over the token grid."""
    *lead, c, h, w = images.shape
    x = images.reshape(*lead, c, h // patch, patch, w // patch, patch)
    x = x.movedim(-5, -1)  # [..., H/p, p, W/p, p, C]
    x = x.transpose(-4, -3)  # [..., H/p, W/p, p, p, C]
    return x.reshape(*lead, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """[..., N, C·p·p] → [..., C, H, W], the inverse of patchify."""
    *lead, _, dim = tokens.shape
    c = dim // (patch * patch)
    x = tokens.reshape(*lead, height // patch, width // patch, patch, patch, c)
    x = x.transpose(-4, -3)  # [..., H/p, p, W/p, p, C]
    x = x.movedim(-1, -5)  # [..., C, H/p, p, W/p, p]
    return x.reshape(*lead, c, height, width)


def encode_masks(labels: torch.Tensor, patch: int) -> torch.Tensor:
    """Label maps [B, H, W] → condition tokens [B, 20, N, 3·p²] in [-1, 1] (global map first)."""
    return patchify(split_mask(labels) * 2 - 1, patch)
