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


def boundary_sums(images: torch.Tensor, sizes) -> dict[int, np.ndarray]:
    """images [N, 3, H, W] (any scale) → per patch size, per image [N, 4]: summed |gradient| and pair counts
    across boundaries, then the same inside patches (additive, for bootstrap resampling)."""
    images = images.float()
    columns = (images[..., :, 1:] - images[..., :, :-1]).abs().sum(dim=(1, 2)).double()  # [N, W-1]
    rows = (images[..., 1:, :] - images[..., :-1, :]).abs().sum(dim=(1, 3)).double()  # [N, H-1]
    per_pair = images.shape[1] * images.shape[2], images.shape[1] * images.shape[3]
    out = {}
    for patch in sizes:
        sums = []
        for diffs, pairs in ((columns, per_pair[0]), (rows, per_pair[1])):
            across = (torch.arange(1, diffs.shape[1] + 1) % patch) == 0
            sums.append(torch.stack([
                diffs[:, across].sum(1), torch.full_like(diffs[:, 0], across.sum().item() * pairs),
                diffs[:, ~across].sum(1), torch.full_like(diffs[:, 0], (~across).sum().item() * pairs),
            ], dim=1))  # fmt: skip
        out[patch] = (sums[0] + sums[1]).numpy()
    return out


def _ratio(total: np.ndarray) -> float:
    return float((total[0] / total[1]) / (total[2] / total[3]))


def patch_grid_score(images, chunk: int = 32) -> dict:
    """images: PIL images at the size they were made, or a tensor [N, 3, H, W] → {"worst", "worst_patch",
    "interval", "by_patch"}: the boundary-over-inside gradient ratio per patch size and its worst, with
    the 95% bootstrap interval of the worst over the images. PIL images are read `chunk` at a time."""
    if isinstance(images, torch.Tensor):
        batches, side = [images], min(images.shape[-2:]) if images.ndim == 4 else 0
        count = images.shape[0] if images.ndim == 4 else 0
    else:
        batches = (_to_tensor(images[i : i + chunk]) for i in range(0, len(images), chunk))
        side, count = (min(images[0].size), len(images)) if images else (0, 0)
    sizes = [p for p in PATCH_SIZES if 2 * p <= side]  # two patches a side at least
    if count == 0 or not sizes:
        raise ValueError(
            f"The patch-grid score needs images of at least 4×4 pixels, got {count} of side {side}."
        )
    parts = [boundary_sums(batch, sizes) for batch in batches]
    per_image = {p: np.concatenate([part[p] for part in parts]) for p in sizes}
    by_patch = {p: _ratio(sums.sum(0)) for p, sums in per_image.items()}
    worst = max(by_patch, key=by_patch.get)
    return {
        "worst": by_patch[worst],
        "worst_patch": worst,
        "interval": bootstrap_interval(per_image[worst], _ratio),
        "by_patch": {str(p): value for p, value in by_patch.items()},
    }


def _to_tensor(images) -> torch.Tensor:
    arrays = np.stack([np.asarray(im.convert("RGB")) for im in images])  # [n, H, W, 3] uint8
    return torch.as_tensor(arrays).permute(0, 3, 1, 2).float()
