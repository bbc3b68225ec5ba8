import math

import pytest
import torch
from torch import nn

from facemogle.mogle import MoGLE, MoGLEConfig


class ReferenceMoGLE(nn.Module):
    """The authors' module as they wrote it semantically: one nn.Linear MLP per expert, a Python loop,
    diffusers-style sinusoidal timestep features (cos first, no shift), softmax gate."""

    def __init__(self, experts=20, c=64, h=32, g=64):
        super().__init__()
        mlp = lambda: nn.Sequential(nn.Linear(c, h), nn.ReLU(), nn.Linear(h, c))  # noqa: E731
        self.global_expert = nn.Module()
        self.global_expert.net = mlp()
        self.local_experts = nn.ModuleList()
        for _ in range(experts - 1):
            expert = nn.Module()
            expert.net = mlp()
            self.local_experts.append(expert)
        self.gating = nn.Module()
        self.gating.timestep_embedding = nn.Module()
        self.gating.timestep_embedding.linear_1 = nn.Linear(g, g)
        self.gating.timestep_embedding.linear_2 = nn.Linear(g, g)
        self.gating.noise_proj = nn.Linear(c, g)
        self.gating.gate = nn.Sequential(nn.Linear(g, g), nn.ReLU(), nn.Linear(g, experts))

    def forward(self, x, noisy, t):
        half = 32
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half
        emb = t[:, None].float() * torch.exp(exponent)[None]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        te = self.gating.timestep_embedding
        time_emb = te.linear_2(torch.nn.functional.silu(te.linear_1(emb)))
        fused = x[:, 0] + self.gating.noise_proj(noisy) + time_emb[:, None]
        weights = self.gating.gate(fused).softmax(dim=2)
        outs = [self.global_expert.net(x[:, 0])] + [
            e.net(x[:, i + 1]) for i, e in enumerate(self.local_experts)
        ]
        outs = torch.stack(outs, dim=1)  # [B, 20, N, C]
        return (outs.permute(0, 2, 1, 3) * weights[..., None]).sum(dim=2)


def inputs(b=2, n=16, c=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 20, n, c, generator=g),
        torch.randn(b, n, c, generator=g),
        torch.rand(b, generator=g),
    )


def test_matches_released_module_from_official_state_dict():
    torch.manual_seed(0)
    reference = ReferenceMoGLE()
    state = reference.state_dict()
    state = {k: (v.to(torch.bfloat16) if "timestep_embedding" in k else v) for k, v in state.items()}
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    module = MoGLE.from_official(state)
    x, noisy, t = inputs()
    for scale in (1.0, 1000.0):
        expected = reference(x, noisy, t * scale)
        module.config.time_scale = scale
        torch.testing.assert_close(module(x, noisy, t), expected, atol=1e-5, rtol=1e-5)


def test_official_round_trip(tmp_path):
    module = MoGLE(MoGLEConfig())
    path = tmp_path / "global_local_mask_moe.pt"
    torch.save(module.to_official(), path)
    loaded = MoGLE.from_official(path)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)
    assert set(module.to_official()) == set(ReferenceMoGLE().state_dict())


def test_from_official_rejects_other_state_dicts():
    state = MoGLE().to_official()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="unexpected"):
        MoGLE.from_official(state)


@pytest.mark.parametrize("experts", [True, False])
@pytest.mark.parametrize("gating", ["dynamic", "static", "scalar", "none"])
def test_shapes_and_ablations(experts, gating):
    module = MoGLE(MoGLEConfig(experts=experts, gating=gating))
    x, noisy, t = inputs()
    out = module(x, noisy, t)
    assert out.shape == (2, 16, 64)
    weights = module.gate_weights(x[:, 0], noisy, t)
    if gating == "none":
        assert module.gate is None
        assert torch.all(weights == 1)
    else:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 16))
    if gating == "scalar":
        assert torch.allclose(weights, weights[:, :1].expand_as(weights))
    if gating == "dynamic":
        other_t = module.gate_weights(x[:, 0], noisy, 1 - t)
        assert not torch.allclose(weights, other_t)
    if gating == "static":
        assert torch.allclose(weights, module.gate_weights(x[:, 0], noisy * 0, 1 - t))
    if not experts and gating == "none":
        torch.testing.assert_close(out, x.sum(1))


@pytest.mark.parametrize("experts", [True, False])
def test_global_expert_alone_ignores_local_maps(experts):
    module = MoGLE(MoGLEConfig(num_experts=1, experts=experts))
    x, noisy, t = inputs()
    changed = x.clone()
    changed[:, 1:] = torch.randn_like(changed[:, 1:])
    out = module(x, noisy, t)
    assert out.shape == (2, 16, 64)
    torch.testing.assert_close(out, module(changed, noisy, t))
    if not experts:
        torch.testing.assert_close(out, x[:, 0])  # one expert: its softmax weight is 1


def test_local_experts_alone_ignore_the_global_map_in_the_experts():
    """The "no global expert" ablation: 19 experts on the 19 local maps; the global map only feeds the gate."""
    module = MoGLE(MoGLEConfig(num_experts=19, global_expert=False))
    full = MoGLE(MoGLEConfig())
    x, noisy, t = inputs()
    hidden = module.expert_hidden(x)
    assert hidden.shape == (2, 19, 16, 32)
    with torch.no_grad():
        for name in ("w1", "b1"):  # the same weights as the full module's local experts
            getattr(full, name)[1:] = getattr(module, name)
    torch.testing.assert_close(hidden, full.expert_hidden(x)[:, 1:])
    assert [k for k in module.to_official() if k.endswith("net.0.weight")][
        0
    ] == "local_experts.0.net.0.weight"
    assert len(module.to_official()) == 19 * 4 + 10
    again = MoGLE.from_official(module.to_official())  # the official layout round trip
    assert not again.config.global_expert and again.config.num_experts == 19
    torch.testing.assert_close(again(x, noisy, t), module(x, noisy, t))


def test_batched_experts_equal_per_expert_loop():
    module = MoGLE(MoGLEConfig())
    x, noisy, t = inputs()
    weights = module.gate_weights(x[:, 0], noisy, t)
    outs = []
    for e in range(20):
        h = torch.relu(x[:, e] @ module.w1[e] + module.b1[e])
        outs.append(h @ module.w2[e] + module.b2[e])
    expected = (torch.stack(outs, dim=2) * weights[..., None]).sum(2)
    torch.testing.assert_close(module(x, noisy, t), expected, atol=1e-5, rtol=1e-5)


def test_dtype_follows_inputs():
    module = MoGLE(MoGLEConfig()).to(torch.bfloat16)
    x, noisy, t = inputs()
    assert module(x.bfloat16(), noisy.bfloat16(), t).dtype == torch.bfloat16


def test_gradients_reach_every_expert():
    module = MoGLE(MoGLEConfig())
    x, noisy, t = inputs()
    module(x, noisy, t).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
    per_expert = module.w1.grad.abs().sum(dim=(1, 2))
    assert torch.all(per_expert > 0)
    assert torch.all(module.w2.grad.abs().sum(dim=(1, 2)) > 0)
