"""Mask consistency: per-class IoU, mIoU and pixel accuracy between label maps."""

from __future__ import annotations

import numpy as np

from ..labels import CLASSES, NUM_CLASSES


def confusion(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[19, 19] counts, rows = target class, columns = predicted class, over all pixels given."""
    index = target.astype(np.int64).ravel() * NUM_CLASSES + predicted.astype(np.int64).ravel()
    return np.bincount(index, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def mask_scores(predicted: np.ndarray, target: np.ndarray) -> dict:
    """mIoU over the classes present in either map set, pixel accuracy, and the per-class IoU table."""
    matrix = confusion(predicted, target)
    intersection = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    present = union > 0
    iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
    return {
        "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "pixel_accuracy": float(intersection.sum() / max(matrix.sum(), 1)),
        "per_class_iou": {
            CLASSES[k]: (None if np.isnan(iou[k]) else float(iou[k])) for k in range(NUM_CLASSES)
        },
    }
