"""Text consistency: does the generated face show the attributes its prompt states?"""

from __future__ import annotations


def attribute_accuracy(predicted: list[dict], stated: list[dict]) -> dict:
    """Accuracy of predicted attributes on the stated ones only (an attribute a prompt does not mention does not count).

    predicted, stated: one dict per image, attribute → value. Returns the overall accuracy over all
    (image, stated attribute) pairs, the per-attribute accuracy, and the number of pairs.
    """
    hits: dict[str, list[bool]] = {}
    for guess, truth in zip(predicted, stated, strict=True):
        for name, value in truth.items():
            hits.setdefault(name, []).append(guess.get(name) == value)
    pairs = [hit for values in hits.values() for hit in values]
    return {
        "accuracy": sum(pairs) / len(pairs) if pairs else float("nan"),
        "per_attribute": {name: sum(v) / len(v) for name, v in sorted(hits.items())},
        "pairs": len(pairs),
    }
