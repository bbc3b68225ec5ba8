"""Image helpers: PIL images to and from tensors in [-1, 1], and grids of images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def images_to_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images → [B, 3, size, size] in [-1, 1] (bicubic resize where needed)."""
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)) for im in images]
    return torch.as_tensor(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] → PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def image_grid(rows: list[list[Image.Image]], pad: int = 2) -> Image.Image:
    """Paste rows of equally sized images into one picture."""
    w, h = rows[0][0].size
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            sheet.paste(image.convert("RGB").resize((w, h)), (pad + x * (w + pad), pad + y * (h + pad)))
    return sheet
