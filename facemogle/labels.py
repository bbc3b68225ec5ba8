"""The CelebAMask-HQ label set and palette; loading, colouring and splitting of face masks."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # the only decoders ever run on a user's file (no EPS, no TIFF)

CLASSES = (
    "background", "skin", "nose", "eyeglasses", "left eye", "right eye", "left brow", "right brow",
    "left ear", "right ear", "mouth", "upper lip", "lower lip", "hair", "hat", "earring", "necklace",
    "neck", "cloth",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)
NUM_MAPS = NUM_CLASSES + 1  # one global map + one binary map per class

PALETTE = np.array(
    [
        (0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
        (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0),
        (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51), (0, 204, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip

# The authors' demo palette swaps the colours of each left/right pair.
LEFT_RIGHT_SWAP = np.array([0, 1, 2, 3, 5, 4, 7, 6, 9, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18])

# Colour decoding: a pixel farther than AMBIGUOUS from every palette colour counts as ambiguous
# (JPEG noise, anti-aliased edges); farther than FOREIGN it is not a palette colour at all.
AMBIGUOUS_DISTANCE = 24.0
FOREIGN_DISTANCE = 64.0
MAX_FOREIGN_FRACTION = 0.1

MaskSource = str | os.PathLike | Image.Image | np.ndarray | bytes
Fit = Literal["error", "crop", "pad"]


class MaskError(ValueError):
    """A mask that cannot be read as a CelebAMask-HQ label map; the message says how to fix it."""


@dataclass
class MaskInfo:
    """How a mask was read: its source format and the share of pixels whose colour was uncertain."""

    source_format: str  # "labels" (index PNG / palette PNG / array) or "colors" (palette-coloured RGB)
    ambiguous_fraction: float = 0.0
    original_size: tuple[int, int] = (0, 0)  # (width, height)


def load_mask(
    source: MaskSource,
    size: int | None = None,
    fit: Fit = "error",
    palette: Literal["standard", "swapped"] = "standard",
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, MaskInfo]:
    """Read a face mask as an H×W uint8 label map with values 0..18.

    Accepts label-index PNGs (palette "P" or single channel, the MM-CelebA-HQ format), RGB masks
    coloured with the CelebAMask-HQ palette (nearest colour, tolerant to JPEG and anti-aliasing),
    PIL images, numpy arrays (H×W labels or H×W×3 colours) and raw file bytes.
    size: resize (nearest neighbour) to size×size; a non-square mask then needs fit="crop" or "pad".
    palette: "swapped" decodes colours drawn with the authors' demo palette (left/right swapped).
    """
    array = _read_array(source)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise MaskError(
            f"The mask is empty ({array.shape[1]}×{array.shape[0]} pixels); pass a non-empty image."
        )
    info = MaskInfo("labels", 0.0, (array.shape[1], array.shape[0]))
    if array.ndim == 3 and _is_grey(array):
        array = array[..., 0]
    if array.ndim == 2:
        labels = _check_labels(array)
    elif array.ndim == 3 and array.shape[2] == 3:
        labels, info.ambiguous_fraction = decode_colors(array)
        info.source_format = "colors"
        if palette == "swapped":
            labels = LEFT_RIGHT_SWAP[labels].astype(np.uint8)
    else:
        raise MaskError(f"A mask must be H×W labels or H×W×3 colours, got an array of shape {array.shape}.")
    if size is not None:
        labels = fit_square(labels, fit)
        labels = resize_labels(labels, size)
    return (labels, info) if return_info else labels


def _read_array(source: MaskSource) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, torch.Tensor):
        return source.cpu().numpy()
    if isinstance(source, Image.Image):
        return _image_to_array(source)
    if isinstance(source, bytes):
        return _open_image(io.BytesIO(source), "<bytes>")
    path = Path(source)
    if not path.exists():
        raise MaskError(f"Mask file {path} does not exist; pass the path of a PNG label map or colour mask.")
    if path.is_dir():
        raise MaskError(f"{path} is a folder; pass the path of one mask image.")
    if path.stat().st_size == 0:
        raise MaskError(f"Mask file {path} is empty (0 bytes); re-export the mask as a PNG.")
    return _open_image(path, str(path))


def _open_image(fp, name: str) -> np.ndarray:
    try:
        with Image.open(fp, formats=IMAGE_FORMATS) as image:
            image.load()
            return _image_to_array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise MaskError(
            f"{name} is not a readable image ({error}); pass a PNG label map or colour mask "
            f"({', '.join(IMAGE_FORMATS)} files are read)."
        ) from None


def _image_to_array(image: Image.Image) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise MaskError(f"The mask image is empty ({image.width}×{image.height}); pass a non-empty image.")
    if image.mode in ("P", "PA"):
        indices = np.asarray(image.getchannel(0))
        if _palette_holds_labels(image.getpalette(), indices):
            return indices  # palette indices are the labels (MM-CelebA-HQ format)
        return np.asarray(image.convert("RGB"))  # an indexed drawing: its colours say the classes
    if image.mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.int64)
    if image.mode == "LA":
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))


def _palette_holds_labels(palette: list[int] | None, indices: np.ndarray) -> bool:
    """Whether a palette image's indices are labels: no palette, or each used index shows its class colour,
    the grey of its own value, or its colour in the PASCAL VOC colour map (labelme and most segmentation
    tools). Any other palette is a drawing whose colours carry the classes."""
    if palette is None:
        return True
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    for index in np.unique(indices):
        if index >= len(colours):
            continue
        known = [(index,) * 3, _voc_colour(int(index))] + ([PALETTE[index]] if index < NUM_CLASSES else [])
        if not any(np.array_equal(colours[index], colour) for colour in known):
            return False
    return True


def _voc_colour(index: int) -> tuple[int, int, int]:
    """Entry `index` of the PASCAL VOC colour map (the bits of the index spread over R, G, B)."""
    rgb = [0, 0, 0]
    for bit in range(8):
        for channel in range(3):
            rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return rgb[0], rgb[1], rgb[2]


def _is_grey(rgb: np.ndarray) -> bool:
    """An RGB image whose three channels are equal and small holds label indices, not colours."""
    same = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return bool(same and rgb.max() < NUM_CLASSES)


def _check_labels(array: np.ndarray) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise MaskError("The label map holds non-integer values; labels must be integers 0..18.")
    if array.min() < 0 or array.max() >= NUM_CLASSES:
        bad = np.unique(array[(array < 0) | (array >= NUM_CLASSES)])[:8].tolist()
        raise MaskError(
            f"The label map holds values {bad} outside 0..18 (the 19 CelebAMask-HQ classes). "
            "If this is a greyscale picture rather than a label map, save the mask as label indices "
            "(palette PNG) or colour it with facemogle.labels.PALETTE."
        )
    return array.astype(np.uint8)


def decode_colors(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Map each pixel of a palette-coloured RGB mask to its nearest palette label.

    Returns the label map and the fraction of ambiguous pixels (far from any palette colour).
    Raises MaskError when too many pixels are nowhere near the palette.
    """
    pixels = rgb.reshape(-1, 3).astype(np.int32)
    colors, inverse = np.unique(pixels, axis=0, return_inverse=True)  # decode each distinct colour once
    distance = np.sqrt(((colors[:, None, :] - PALETTE[None].astype(np.int32)) ** 2).sum(-1))  # [K, 19]
    nearest = distance.argmin(1)
    nearest_distance = distance.min(1)[inverse.reshape(-1)]
    foreign = nearest_distance > FOREIGN_DISTANCE
    if foreign.mean() > MAX_FOREIGN_FRACTION:
        examples = np.unique(pixels[foreign], axis=0)[:5].tolist()
        raise MaskError(
            f"{foreign.mean():.1%} of the mask's pixels have colours that are not in the CelebAMask-HQ "
            f"palette (e.g. RGB {examples}). Colour the mask with facemogle.labels.PALETTE (see "
            "`facemogle labels`), or save it as a label-index PNG with values 0..18."
        )
    labels = nearest[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8)
    return labels, float((nearest_distance > AMBIGUOUS_DISTANCE).mean())


def fit_square(labels: np.ndarray, fit: Fit = "error") -> np.ndarray:
    """Make a label map square: centre crop, pad with background, or raise for fit="error"."""
    height, width = labels.shape
    if height == width:
        return labels
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return labels[top : top + side, left : left + side]
    if fit == "pad":
        side = max(height, width)
        out = np.zeros((side, side), dtype=labels.dtype)
        top, left = (side - height) // 2, (side - width) // 2
        out[top : top + height, left : left + width] = labels
        return out
    raise MaskError(
        f"The mask is {width}×{height}, but a square mask is required. Pass fit='crop' (centre crop) or "
        "fit='pad' (pad with background); on the command line, --fit crop or --fit pad."
    )


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Resize a label map to size×size, nearest neighbour (labels are never interpolated)."""
    if labels.shape == (size, size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST))


def colorize(labels: np.ndarray | torch.Tensor) -> Image.Image:
    """Render a label map in the CelebAMask-HQ palette as an RGB image."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    return Image.fromarray(PALETTE[_check_labels(labels)])


def save_mask(labels: np.ndarray, path: str | os.PathLike) -> None:
    """Write a label map as a palette PNG (indices = labels, colours = the palette), as MM-CelebA-HQ does."""
    image = Image.fromarray(_check_labels(np.asarray(labels)), mode="P")
    image.putpalette(PALETTE.reshape(-1).tolist())
    image.save(path, format="PNG")


def split_mask(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Semantic decoupling: labels [H, W] or [B, H, W] → condition images [(B,) 20, 3, H, W] in [0, 1].

    Map 0 is the global map (the mask in its palette colours); map 1 + k is class k's binary map
    (white where label == k). All 20 are 3-channel images, built from label values.
    """
    labels = (
        labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.array(labels, dtype=np.int64))
    )
    labels = labels.long()
    palette = torch.as_tensor(PALETTE, device=labels.device, dtype=torch.float32) / 255.0
    global_map = palette[labels].movedim(-1, -3).unsqueeze(-4)  # [..., 1, 3, H, W]
    binary = torch.nn.functional.one_hot(labels, NUM_CLASSES).movedim(-1, -3).float()  # [..., 19, H, W]
    local_maps = binary.unsqueeze(-3).expand(*binary.shape[:-2], 3, *binary.shape[-2:])  # [..., 19, 3, H, W]
    return torch.cat([global_map, local_maps], dim=-4)
