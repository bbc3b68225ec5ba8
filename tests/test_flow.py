import pytest
import torch

from facemogle.flow import (
    ModalityDropout,
    combine_guidance,
    guidance_branches,
    noisy_sample,
    sample_ode,
    sample_time,
    time_grid,
    time_shift,
    velocity_target,
)


def test_interpolation_and_target():
    x0, noise = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    t = torch.tensor([0.0, 0.5, 1.0])
    xt = noisy_sample(x0, noise, t)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[2], noise[2])
    # the target is dx_t/dt
    eps = 1e-3
    derivative = (noisy_sample(x0, noise, t + eps) - xt) / eps
    torch.testing.assert_close(derivative, velocity_target(x0, noise), atol=1e-2, rtol=1e-2)


def test_training_times_are_logit_normal():
    t = sample_time(20000, torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.01
    assert abs(torch.logit(t).std().item() - 1.0) < 0.02


def test_training_times_shift_towards_noise_as_the_grid_does():
    plain = sample_time(20000, torch.Generator().manual_seed(0))
    shifted = sample_time(20000, torch.Generator().manual_seed(0), shift=2.0)
    torch.testing.assert_close(shifted, 2 * plain / (1 + plain))  # the same draws, warped
    assert shifted.mean() > plain.mean() + 0.1 and 0 < shifted.min() and shifted.max() < 1
    grid = time_grid(8, shift=2.0)
    torch.testing.assert_close(grid, 2 * time_grid(8) / (1 + time_grid(8)))


def test_time_grid():
    grid = time_grid(10, shift=3.0)
    assert grid[0] == 1 and grid[-1] == 0 and len(grid) == 11
    assert torch.all(grid[1:] < grid[:-1])
    assert grid[5] > 0.5  # shifted towards high noise
    assert time_shift(4096) > time_shift(256) > 1


def test_ode_sampler_recovers_exact_flow():
    """For data concentrated at x0, the true velocity is (x - x0)/t; Euler integrates it exactly."""
    x0 = torch.randn(2, 3)

    def velocity(x, t):
        return (x - x0) / t[:, None]

    for method in ("euler", "heun"):
        out = sample_ode(velocity, torch.randn(2, 3), time_grid(8, 2.0), method)
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_guidance_branches_and_scales():
    assert guidance_branches(True, True, 1.0, 1.0) == [(True, True)]
    assert guidance_branches(True, True, 2.0, 2.0) == [(True, True), (False, True), (False, False)]
    assert guidance_branches(True, True, 1.0, 2.0) == [(True, True), (False, True), (False, False)]
    assert guidance_branches(False, True, 1.0, 3.0) == [(False, True), (False, False)]
    assert guidance_branches(True, False, 2.0, 3.0) == [(True, False), (False, False)]
    full, mask, uncond = torch.randn(3, 4).unbind(0)
    preds = {(True, True): full, (False, True): mask, (False, False): uncond}
    torch.testing.assert_close(combine_guidance(preds, True, True, 1.0, 1.0), full)
    expected = uncond + 2 * (mask - uncond) + 3 * (full - mask)
    torch.testing.assert_close(combine_guidance(preds, True, True, 3.0, 2.0), expected)
    text_only = {(True, False): full, (False, False): uncond}
    torch.testing.assert_close(
        combine_guidance(text_only, True, False, 2.0, 5.0), uncond + 2 * (full - uncond)
    )


@pytest.mark.parametrize("has_text", [True, False])
@pytest.mark.parametrize("has_mask", [True, False])
@pytest.mark.parametrize("text_scale", [1.0, 3.0])
@pytest.mark.parametrize("mask_scale", [1.0, 2.0])
def test_guidance_matches_the_documented_formula_from_the_branches_it_asks_for(
    has_text, has_mask, text_scale, mask_scale
):
    every = {(t, m): torch.randn(4) for t in (True, False) for m in (True, False)}
    condition = lambda text, mask: every[(text and has_text, mask and has_mask)]  # noqa: E731
    expected = (
        condition(False, False)
        + (mask_scale if has_mask else 1.0) * (condition(False, True) - condition(False, False))
        + (text_scale if has_text else 1.0) * (condition(True, True) - condition(False, True))
    )
    branches = guidance_branches(has_text, has_mask, text_scale, mask_scale)
    assert branches[0] == (has_text, has_mask)
    given = {branch: every[branch] for branch in branches}
    torch.testing.assert_close(combine_guidance(given, has_text, has_mask, text_scale, mask_scale), expected)


def test_modality_dropout_rates():
    keep_text, keep_mask, keep_local = ModalityDropout(0.1, 0.2, 0.3).sample(
        20000, 19, torch.Generator().manual_seed(0)
    )
    assert keep_local.shape == (20000, 19)
    assert abs(1 - keep_text.float().mean().item() - 0.1) < 0.01
    assert abs(1 - keep_mask.float().mean().item() - 0.2) < 0.01
    assert abs(1 - keep_local.float().mean().item() - 0.3) < 0.01
    assert abs(torch.corrcoef(torch.stack([keep_text.float(), keep_mask.float()]))[0, 1].item()) < 0.03
