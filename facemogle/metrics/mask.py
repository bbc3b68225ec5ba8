"""Mask consistency: per-class IoU, mIoU and pixel accuracy between label maps."""

from __future__ import annotations

import numpy as np

from ..labels import CLASSES, NUM_CLASSES
from .bootstrap import bootstrap_interval


def confusion(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[19, 19] counts, rows = target class, columns = predicted class, over all pixels given."""
    index = target.astype(np.int64).ravel() * NUM_CLASSES + predicted.astype(np.int64).ravel()
    return np.bincount(index, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def image_confusions(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N, 19, 19] confusion matrix per image. predicted, target: [N, H, W] label maps."""
    return np.stack([confusion(p, t) for p, t in zip(predicted, target, strict=True)])


def mask_scores(predicted: np.ndarray, target: np.ndarray) -> dict:
    """Scores of [N, H, W] predicted label maps against the target maps (see `confusion_scores`)."""
    return confusion_scores(image_confusions(predicted, target))


def confusion_scores(per_image: np.ndarray) -> dict:
    """mIoU over the classes present in either map set (with its 95% bootstrap interval over images), pixel
    accuracy, and the per-class IoU table, from [N, 19, 19] per-image confusion matrices."""
    matrix = per_image.sum(0)
    iou = class_iou(matrix)
    return {
        "miou": miou(matrix),
        "miou_interval": bootstrap_interval(per_image, miou),
        "pixel_accuracy": float(np.diag(matrix).sum() / max(matrix.sum(), 1)),
        "per_class_iou": {
            CLASSES[k]: (None if np.isnan(iou[k]) else float(iou[k])) for k in range(NUM_CLASSES)
        },
    }


def class_iou(matrix: np.ndarray) -> np.ndarray:
    """[19] IoU per class from a confusion matrix; NaN for a class absent from both maps."""
    intersection = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


def miou(matrix: np.ndarray) -> float:
    iou = class_iou(matrix)
    return float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan")
