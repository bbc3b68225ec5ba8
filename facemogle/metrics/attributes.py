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
    per_image = []  # [N, 2]: hits, stated attributes
    for guess, truth in zip(predicted, stated, strict=True):
        correct = [guess.get(name) == value for name, value in truth.items()]
        for name, hit in zip(truth, correct):
            hits.setdefault(name, []).append(hit)
        per_image.append((sum(correct), len(correct)))
    pairs = [hit for values in hits.values() for hit in values]
    return {
        "accuracy": sum(pairs) / len(pairs) if pairs else float("nan"),
        "accuracy_interval": bootstrap_interval(np.array(per_image, float).reshape(-1, 2), _ratio),
        "per_attribute": {name: sum(v) / len(v) for name, v in sorted(hits.items())},
        "pairs": len(pairs),
    }


def _ratio(total: np.ndarray) -> float:
    return total[0] / total[1] if total[1] else float("nan")
