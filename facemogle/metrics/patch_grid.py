"""A visible patch grid: how much stronger the image gradient is across patch boundaries than inside patches.

For a patch size p, the score is the mean absolute difference between neighbouring pixels whose pair
straddles a boundary (column or row j → j + 1 with (j + 1) a multiple of p) over the mean of the pairs
that do not, over all images, rows, columns and channels; a face without a grid scores about 1 (SynthFace's
rendered faces 1.10 at 128², 1.21 at 64² where few boundaries of the large sizes fall on the face's
fixed layout). The report gives the worst over patch sizes 2–16 (those with two patches a side).
"""

from __future__ import annotations

import numpy as np
import torch

from .bootstrap import bootstrap_interval

PATCH_SIZES = tuple(range(2, 17))


def boundary_sums(images: torch.Tensor, patch: int) -> np.ndarray:
    """images [N, 3, H, W] (any scale) → per image [N, 4]: summed |gradient| and pair counts across
    boundaries, then the same inside patches (additive, for bootstrap resampling)."""
    images = images.double()
    columns = (images[..., :, 1:] - images[..., :, :-1]).abs().sum(dim=(1, 2))  # [N, W-1]
    rows = (images[..., 1:, :] - images[..., :-1, :]).abs().sum(dim=(1, 3))  # [N, H-1]
    per_pair = images.shape[1] * images.shape[2], images.shape[1] * images.shape[3]
    sums = []
    for diffs, pairs in ((columns, per_pair[0]), (rows, per_pair[1])):
        across = (torch.arange(1, diffs.shape[1] + 1) % patch) == 0
        sums.append(torch.stack([
            diffs[:, across].sum(1), torch.full_like(diffs[:, 0], across.sum().item() * pairs),
            diffs[:, ~across].sum(1), torch.full_like(diffs[:, 0], (~across).sum().item() * pairs),
        ], dim=1))  # fmt: skip
    return (sums[0] + sums[1]).numpy()


def _ratio(total: np.ndarray) -> float:
    return float((total[0] / total[1]) / (total[2] / total[3]))


def patch_grid_score(images: torch.Tensor) -> dict:
    """images [N, 3, H, W] at the resolution they were made → {"worst", "worst_patch", "interval",
    "by_patch"}: the boundary-over-inside gradient ratio per patch size and its worst, with the 95%
    bootstrap interval of the worst over the images."""
    sizes = [p for p in PATCH_SIZES if 2 * p <= min(images.shape[-2:])]  # two patches a side at least
    if images.shape[0] == 0 or not sizes:
        raise ValueError(
            f"The patch-grid score needs images of at least 4×4 pixels, got {tuple(images.shape)}."
        )
    per_image = {p: boundary_sums(images, p) for p in sizes}
    by_patch = {p: _ratio(sums.sum(0)) for p, sums in per_image.items()}
    worst = max(by_patch, key=by_patch.get)
    return {
        "worst": by_patch[worst],
        "worst_patch": worst,
        "interval": bootstrap_interval(per_image[worst], _ratio),
        "by_patch": {str(p): value for p, value in by_patch.items()},
    }
