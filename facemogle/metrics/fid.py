"""Fréchet distance and kernel inception distance (KID) between two sets of features, and the Inception-v3
features of standard FID/KID (torchmetrics' port of the TF-slim FID network, weights from a local file)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import linalg

from . import MetricUnavailable

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_HELP = (
    f"the FID Inception-v3 weights file {INCEPTION_FILE} (torch-fidelity's release, "
    "github.com/toshas/torch-fidelity/releases); pass it with --inception FILE"
)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) of feature sets a [N, D] and b [M, D]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD² with the cubic polynomial kernel (KID), mean and std over random subsets."""
    rng = np.random.default_rng(seed)
    n = min(subset_size, len(a), len(b))
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = (
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean()
        )
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def load_inception(path: str | os.PathLike | None) -> torch.nn.Module:
    """The FID Inception-v3 (2048-d pool features) from a local weights file; MetricUnavailable if missing."""
    if path is None:
        raise MetricUnavailable(f"Inception FID/KID need {INCEPTION_HELP}.")
    if not Path(path).is_file():
        raise MetricUnavailable(f"Inception FID/KID: {path} is not a file; they need {INCEPTION_HELP}.")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as error:
        raise MetricUnavailable(
            f"Inception FID/KID need torchmetrics and torch-fidelity ({error}); pip install 'facemogle[eval]'."
        ) from error
    try:
        return NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except Exception as error:  # a wrong or corrupt file: report it, never crash the evaluation
        raise MetricUnavailable(
            f"Inception FID/KID: {path} is not the Inception-v3 state dict ({type(error).__name__}: "
            f"{str(error)[:200]}); they need {INCEPTION_HELP}."
        ) from error


def inception_features(network: torch.nn.Module, images: list[Image.Image], batch: int = 32) -> np.ndarray:
    """[N, 2048] float64 features; the network resizes uint8 images to 299² (bilinear, antialiased)."""
    features = []
    for start in range(0, len(images), batch):
        chunk = [np.asarray(image.convert("RGB")) for image in images[start : start + batch]]
        pixels = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W] uint8
        with torch.no_grad():
            features.append(network(pixels).reshape(len(chunk), -1).double())
    return torch.cat(features).numpy()
