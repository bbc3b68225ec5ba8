"""Separating generated from real faces, as the paper's Table 6: AUC, EER and AP of a detector's scores.

Scores are "generated" probabilities (or any score that is higher for generated faces); labels 1 for
generated, 0 for real. Each metric has a 95% bootstrap interval over the faces, resampled within each class
so that every resample keeps both.
"""

from __future__ import annotations

import numpy as np

from .bootstrap import DRAWS, LEVEL


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The probability that a generated face scores above a real one (ties count half)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    _check(scores, labels)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(average, counts)
    positives, negatives = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """The error rate where false positives (real called generated) equal misses, interpolated on the ROC."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    _check(scores, labels)
    unique, index = np.unique(-scores, return_inverse=True)  # thresholds from the highest score down
    hits = np.bincount(index, weights=labels, minlength=len(unique))  # generated faces at each threshold
    alarms = np.bincount(index, weights=~labels, minlength=len(unique))
    false_positive = np.concatenate([[0.0], np.cumsum(alarms) / alarms.sum()])  # called generated: score ≥ it
    miss = np.concatenate([[1.0], 1 - np.cumsum(hits) / hits.sum()])
    gap = false_positive - miss  # rises from −1 to 1 as the threshold falls
    k = int(np.argmax(gap >= 0))
    if gap[k] == 0:
        return float(false_positive[k])
    w = gap[k] / (gap[k] - gap[k - 1])  # the crossing, linearly between the thresholds either side
    return float(w * (false_positive[k - 1] + miss[k - 1]) / 2 + (1 - w) * (false_positive[k] + miss[k]) / 2)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean precision at each generated face's rank, the faces sorted by falling score (ties broken by label
    order, real first: a pessimistic reading)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    _check(scores, labels)
    order = np.lexsort((labels, -scores))  # by score falling, real before generated on ties
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


METRICS = {"auc": roc_auc, "eer": equal_error_rate, "ap": average_precision}


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """The decision "generated when the score is at least `threshold`": the share of real faces it calls
    generated (false-positive rate) and of generated faces it catches (true-positive rate)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    _check(scores, labels)
    called = scores >= threshold
    return {
        "threshold": float(threshold),
        "fpr": float(called[~labels].mean()),
        "tpr": float(called[labels].mean()),
    }


def detection_scores(scores: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """AUC, EER and AP with their 95% bootstrap intervals, and the counts of each class."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    _check(scores, labels)
    rng = np.random.default_rng(seed)
    generated, real = np.flatnonzero(labels), np.flatnonzero(~labels)
    draws = [np.concatenate([rng.choice(generated, len(generated)), rng.choice(real, len(real))])
             for _ in range(DRAWS)]  # fmt: skip
    out: dict = {"n_generated": int(labels.sum()), "n_real": int((~labels).sum())}
    for name, metric in METRICS.items():
        out[name] = metric(scores, labels)
        values = [metric(scores[d], labels[d]) for d in draws]
        low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        out[f"{name}_interval"] = [float(low), float(high)]
    return out


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-d and of one length, got {scores.shape} and {labels.shape}."
        )
    if labels.all() or not labels.any():
        raise ValueError("Detection metrics need both generated (label 1) and real (label 0) faces.")
    if not np.isfinite(scores).all():
        raise ValueError("Detector scores must be finite numbers.")


def evaluate_detection(
    detectors: dict,
    real: dict[str, list],
    generated: dict[str, list],
    out,
) -> dict:
    """Each detector on real faces against each generator's faces, clean and after each degradation
    (detector.DEGRADATIONS); writes report.json and report.md in `out` and returns the report.

    detectors: name → detector.Detector; real, generated: generator name → PIL images (the real faces each
    generator is told from, at its faces' size)."""
    from pathlib import Path

    from ..detector import DEGRADATIONS, degrade
    from ..io import atomic_write, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in DEGRADATIONS:
        for generator, faces in generated.items():
            real_seen = [degrade(im, kind) for im in real[generator]]
            faces_seen = [degrade(im, kind) for im in faces]
            labels = np.r_[np.zeros(len(real_seen)), np.ones(len(faces_seen))]
            for name, detector in detectors.items():
                scores = np.r_[detector.probabilities(real_seen), detector.probabilities(faces_seen)]
                rows.append({"detector": name, "generator": generator, "degradation": kind,
                             **detection_scores(scores, labels),
                             **rates_at(scores, labels, detector.config.threshold)})  # fmt: skip
    report = {"n_real": {g: len(f) for g, f in real.items()}, "n_generated": {g: len(f) for g, f in generated.items()}, "rows": rows}  # fmt: skip
    write_json(out / "report.json", report)
    atomic_write(out / "report.md", lambda temporary: Path(temporary).write_text(detection_markdown(report)))
    return report


def detection_markdown(report: dict) -> str:
    """The paper's Table 6 layout: AUC, EER and AP per detector, generator and degradation."""
    lines = ["# Detection: generated vs real faces", "",
             "Faces: " + ", ".join(f"{g} {n} against {report['n_real'][g]} real" for g, n in report["n_generated"].items())
             + " (the real ones at each generator's size; the generated ones stored as the real ones are). In brackets: 95% bootstrap intervals (faces resampled "
             "within each class). At the detector's threshold t (generated when P ≥ t): FPR, the share of real faces "
             "called generated; TPR, the share of generated faces caught.", "",
             "| detector | generator | degradation | AUC ↑ | EER ↓ | AP ↑ | t | FPR ↓ | TPR ↑ |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in report["rows"]:
        cells = [
            f"{row[m]:.3f} [{row[f'{m}_interval'][0]:.3f}, {row[f'{m}_interval'][1]:.3f}]" for m in METRICS
        ]
        cells += [f"{row['threshold']:g}", f"{row['fpr']:.3f}", f"{row['tpr']:.3f}"]
        lines.append(
            f"| {row['detector']} | {row['generator']} | {row['degradation']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
