import numpy as np
import pytest

from facemogle.metrics.attributes import attribute_accuracy
from facemogle.metrics.fid import frechet_distance, kernel_distance
from facemogle.metrics.mask import mask_scores


def test_mask_scores_known_cases():
    a = np.zeros((2, 8, 8), np.uint8)
    a[:, :4] = 1
    same = mask_scores(a, a)
    assert same["miou"] == 1 and same["pixel_accuracy"] == 1
    disjoint = mask_scores(np.where(a == 1, 2, 3), a)
    assert disjoint["miou"] == 0 and disjoint["pixel_accuracy"] == 0
    half = a.copy()
    half[:, :, :2] = 0  # a quarter of class 1 (8 of its 32 pixels per map) predicted as background
    scores = mask_scores(half, a)
    assert scores["per_class_iou"]["skin"] == pytest.approx(24 / 32)
    assert scores["per_class_iou"]["background"] == pytest.approx(32 / 40)
    assert scores["per_class_iou"]["hat"] is None
    assert scores["miou"] == pytest.approx((0.75 + 0.8) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(56 / 64)


def test_attribute_accuracy_counts_only_stated_attributes():
    predicted = [{"hat": True, "hair_color": "red", "smiling": False}, {"hat": False, "hair_color": "black"}]
    stated = [{"hat": True, "hair_color": "blond"}, {"hair_color": "black"}]
    result = attribute_accuracy(predicted, stated)
    assert result["pairs"] == 3
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["per_attribute"] == {"hair_color": 0.5, "hat": 1.0}


def test_frechet_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    shifted = frechet_distance(x, x + 2)
    assert shifted == pytest.approx(4 * 8, rel=1e-6)


def test_kid_is_unbiased_on_shuffled_halves():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16))
    shuffled = x[rng.permutation(len(x))]
    mean, std = kernel_distance(shuffled[:1000], shuffled[1000:], subsets=20, subset_size=500)
    assert abs(mean) < 3 * std + 1e-3
    far, _ = kernel_distance(x[:1000], x[1000:] + 1, subsets=5, subset_size=500)
    assert far > 10 * abs(mean)
