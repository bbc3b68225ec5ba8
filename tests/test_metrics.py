import numpy as np
import pytest

from facemogle.metrics.attributes import attribute_accuracy
from facemogle.metrics.bootstrap import bootstrap_interval
from facemogle.metrics.compare import paired_difference
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


def test_mask_interval_spans_the_spread_over_images():
    target = np.zeros((40, 8, 8), np.uint8)
    target[:, :4] = 1
    assert mask_scores(target, target)["miou_interval"] == [1.0, 1.0]  # every resample is perfect
    predicted = target.copy()
    predicted[::2] = 0  # half the images miss class 1 entirely
    scores = mask_scores(predicted, target)
    low, high = scores["miou_interval"]
    assert low < scores["miou"] < high and high - low > 0.05
    assert mask_scores(predicted, target)["miou_interval"] == [low, high]  # seeded: reports are reproducible


def test_attribute_interval_narrows_with_more_images():
    stated = [{"hat": True}] * 40
    predicted = [{"hat": k % 4 != 0} for k in range(40)]  # 75% right
    few = attribute_accuracy(predicted, stated)
    many = attribute_accuracy(predicted * 10, stated * 10)
    assert few["accuracy"] == many["accuracy"] == 0.75
    assert few["accuracy_interval"][0] < 0.75 < few["accuracy_interval"][1]
    assert np.diff(many["accuracy_interval"]) < 0.6 * np.diff(few["accuracy_interval"])


def test_bootstrap_interval_of_a_mean_matches_its_standard_error():
    values = np.random.default_rng(1).normal(size=(400, 2))
    values[:, 1] = 1  # [N, 2]: value, count → the mean
    low, high = bootstrap_interval(values, lambda total: total[0] / total[1])
    assert (high - low) / 2 == pytest.approx(1.96 * values[:, 0].std() / np.sqrt(400), rel=0.15)
    assert np.isnan(bootstrap_interval(values[:0], lambda total: 0.0)).all()  # no items, no interval


def test_paired_difference_resolves_what_separate_intervals_cannot():
    rng = np.random.default_rng(0)
    stated = np.full(200, 5.0)
    first = np.stack(
        [rng.integers(0, 6, 200).astype(float), stated], 1
    )  # [N, 2]: hits of 5, items vary a lot
    second = first.copy()
    second[::5, 0] = np.minimum(second[::5, 0] + 1, 5)  # one more attribute right on every 5th item
    rate = attribute_rate = lambda total: total[0] / total[1]  # noqa: E731
    difference, (low, high) = paired_difference(first, second, attribute_rate)
    assert (
        difference == pytest.approx(rate(second.sum(0)) - rate(first.sum(0))) and 0 < low < difference < high
    )
    first_interval, second_interval = bootstrap_interval(first, rate), bootstrap_interval(second, rate)
    assert first_interval[1] > second_interval[0]  # each score alone: the intervals overlap
    assert paired_difference(first, first, rate) == (0.0, [0.0, 0.0])


def test_frechet_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    shifted = frechet_distance(x, x + 2)
    assert shifted == pytest.approx(4 * 8, rel=1e-6)


@pytest.mark.parametrize("n, m", [(200, 200), (150, 260), (600, 400)])  # fewer items than dimensions, and more
def test_frechet_distance_equals_the_matrix_square_root_definition(n, m):
    from scipy import linalg

    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 256)) @ rng.normal(size=(256, 256)) * 0.1
    b = rng.normal(size=(m, 256)) * rng.uniform(0.5, 2, 256) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(a.astype(np.float32), b) == pytest.approx(expected, rel=1e-5)


def test_kid_is_unbiased_on_shuffled_halves():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16))
    shuffled = x[rng.permutation(len(x))]
    mean, std = kernel_distance(shuffled[:1000], shuffled[1000:], subsets=20, subset_size=500)
    assert abs(mean) < 3 * std + 1e-3
    far, _ = kernel_distance(x[:1000], x[1000:] + 1, subsets=5, subset_size=500)
    assert far > 10 * abs(mean)


def test_patch_grid_score_finds_the_patch_size_of_a_blocky_image():
    import torch

    from facemogle.metrics.patch_grid import patch_grid_score

    generator = torch.Generator().manual_seed(0)
    blocks = torch.rand(6, 3, 16, 16, generator=generator)  # 4×4-pixel patches of constant colour …
    blocky = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)
    blocky = blocky + 0.01 * torch.rand(blocky.shape, generator=generator)  # … and a little noise
    score = patch_grid_score(blocky)
    assert score["worst_patch"] == 4 and score["worst"] > 10
    assert score["interval"][0] <= score["worst"] <= score["interval"][1]
    assert score["by_patch"]["4"] > score["by_patch"]["2"] > score["by_patch"]["3"]
    smooth = torch.linspace(-1, 1, 64).expand(6, 3, 64, 64)  # a ramp: every neighbour pair differs alike
    assert patch_grid_score(smooth)["worst"] == pytest.approx(1.0)
    noise = torch.rand(6, 3, 64, 64, generator=generator)
    assert abs(patch_grid_score(noise)["worst"] - 1) < 0.1
    assert patch_grid_score(torch.rand(2, 3, 8, 8))["by_patch"].keys() == {"2", "3", "4"}
    with pytest.raises(ValueError, match="at least 4×4"):
        patch_grid_score(torch.rand(2, 3, 3, 3))


def test_detection_metrics_on_known_answers():
    from facemogle.metrics.detection import (
        average_precision,
        detection_scores,
        equal_error_rate,
        rates_at,
        roc_auc,
    )

    labels = np.array([0] * 50 + [1] * 50)
    perfect = labels + np.linspace(0, 0.5, 100)  # every generated face above every real one
    assert roc_auc(perfect, labels) == 1 and equal_error_rate(perfect, labels) == 0
    assert average_precision(perfect, labels) == 1
    assert roc_auc(-perfect, labels) == 0 and equal_error_rate(-perfect, labels) == 1
    constant = np.zeros(100)  # no information: chance level
    assert roc_auc(constant, labels) == 0.5 and equal_error_rate(constant, labels) == 0.5
    assert average_precision(constant, labels) == pytest.approx(
        np.mean(np.arange(1, 51) / np.arange(51, 101))
    )
    scores = np.random.default_rng(0).random(4000)
    many = np.random.default_rng(1).integers(0, 2, 4000)
    assert abs(roc_auc(scores, many) - 0.5) < 0.03 and abs(equal_error_rate(scores, many) - 0.5) < 0.03
    assert abs(average_precision(scores, many) - many.mean()) < 0.03
    # a hand-computed case: real 0.1, 0.4; generated 0.35, 0.8 → 3 of 4 pairs ordered; AP (1 + 2/3) / 2
    small_scores, small_labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert roc_auc(small_scores, small_labels) == 0.75
    assert average_precision(small_scores, small_labels) == pytest.approx((1 + 2 / 3) / 2)
    assert (
        equal_error_rate(small_scores, small_labels) == 0.5
    )  # at 0.4 one real alarm and one miss of two each
    # at 0.4: real 0.4 is called generated (at least the threshold), generated 0.35 is missed
    assert rates_at(small_scores, small_labels, 0.4) == {"threshold": 0.4, "fpr": 0.5, "tpr": 0.5}
    assert rates_at(small_scores, small_labels, 0.9) == {"threshold": 0.9, "fpr": 0.0, "tpr": 0.0}
    report = detection_scores(np.r_[scores[:200], scores[:200] + 0.3], np.r_[np.zeros(200), np.ones(200)])
    assert report["n_generated"] == report["n_real"] == 200
    for name in ("auc", "eer", "ap"):
        low, high = report[f"{name}_interval"]
        assert low <= report[name] <= high and high - low < 0.2
    with pytest.raises(ValueError, match="both generated"):
        roc_auc(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))
