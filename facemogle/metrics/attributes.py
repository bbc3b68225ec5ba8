"""Text consistency: does the generated face show the attributes its prompt states?"""

from __future__ import annotations

import numpy as np

from .bootstrap import bootstrap_interval


def attribute_accuracy(predicted: list[dict], stated: list[dict]) -> dict:
    """Accuracy of predicted attributes on the stated ones only (an attribute a prompt does not mention does not count).

    predicted, stated: one dict per image, attribute → value. Returns the overall accuracy over all
    (image, stated attribute) pairs with its 95% bootstrap interval over images, the per-attribute
    accuracy, and the number of pairs.
    """
    hits: dict[str, list[bool]] = {}
    for guess, truth in zip(predicted, stated, strict=True):
        for name, value in truth.items():
            hits.setdefault(name, []).append(guess.get(name) == value)
    pairs = [hit for values in hits.values() for hit in values]
    return {
        "accuracy": sum(pairs) / len(pairs) if pairs else float("nan"),
        "accuracy_interval": bootstrap_interval(attribute_hits(predicted, stated), hit_rate),
        "per_attribute": {name: sum(v) / len(v) for name, v in sorted(hits.items())},
        "pairs": len(pairs),
    }


def attribute_hits(predicted: list[dict], stated: list[dict]) -> np.ndarray:
    """[N, 2] per image: stated attributes predicted right, stated attributes."""
    counts = [
        (sum(guess.get(name) == value for name, value in truth.items()), len(truth))
        for guess, truth in zip(predicted, stated, strict=True)
    ]
    return np.array(counts, float).reshape(-1, 2)


def hit_rate(total: np.ndarray) -> float:
    """Accuracy from summed [2] (hits, stated) counts."""
    return float(total[0] / total[1]) if total[1] else float("nan")
