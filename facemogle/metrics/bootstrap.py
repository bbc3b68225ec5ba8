"""Bootstrap intervals over images: how far a dataset-level score would move with another draw of items."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DRAWS = 1000
LEVEL = 0.95


def bootstrap_interval(
    per_item: np.ndarray, statistic: Callable[[np.ndarray], float], seed: int = 0
) -> list[float]:
    """The central LEVEL interval of `statistic` over DRAWS resamplings of the items with replacement.

    per_item: [N, ...] additive per-item counts; statistic maps their sum over a resample ([...]) to a score.
    """
    n = len(per_item)
    if n == 0:
        return [float("nan"), float("nan")]
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=DRAWS)  # [DRAWS, N]
    totals = np.tensordot(counts, per_item, axes=1)  # [DRAWS, ...]
    values = np.array([statistic(total) for total in totals])
    low, high = np.nanquantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(low), float(high)]
