import pytest
import torch
from diffusers import FluxTransformer2DModel

from facemogle.transformer import AttentionOptions, ConditionedFlux, attention_bias, image_ids, text_ids


def tiny_flux(seed=0):
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=12, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=24, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip


def inputs(b=2, side=4, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = side * side
    return dict(
        noisy_tokens=torch.randn(b, n, 12, generator=g), timestep=torch.rand(b, generator=g),
        text_tokens=torch.randn(b, length, 24, generator=g), pooled_text=torch.randn(b, 24, generator=g),
        img_ids=image_ids(side, side), txt_ids=text_ids(length),
    )  # fmt: skip


def native(flux, x):
    return flux(
        hidden_states=x["noisy_tokens"], encoder_hidden_states=x["text_tokens"], pooled_projections=x["pooled_text"],
        timestep=x["timestep"], img_ids=x["img_ids"], txt_ids=x["txt_ids"],
    ).sample  # fmt: skip


def test_no_condition_equals_native_forward():
    flux = tiny_flux()
    x = inputs()
    torch.testing.assert_close(ConditionedFlux(flux)(**x), native(flux, x), atol=1e-5, rtol=1e-5)


def test_guidance_embedding_variant_equals_native():
    torch.manual_seed(0)
    flux = FluxTransformer2DModel(
        patch_size=1, in_channels=12, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=24, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    x = inputs()
    guidance = torch.full((2,), 3.5)
    expected = flux(
        hidden_states=x["noisy_tokens"], encoder_hidden_states=x["text_tokens"], pooled_projections=x["pooled_text"],
        timestep=x["timestep"], img_ids=x["img_ids"], txt_ids=x["txt_ids"], guidance=guidance,
    ).sample  # fmt: skip
    torch.testing.assert_close(ConditionedFlux(flux)(**x, guidance=guidance), expected, atol=1e-5, rtol=1e-5)


def test_condition_changes_output_and_absent_condition_does_not():
    model = ConditionedFlux(tiny_flux())
    x = inputs()
    base = model(**x)
    cond = torch.randn(2, 16, 12)
    with_cond = model(**x, condition_tokens=cond)
    assert (with_cond - base).abs().max() > 1e-3
    absent = model(**x, condition_tokens=cond, condition_present=torch.tensor([True, False]))
    torch.testing.assert_close(absent[1], base[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(absent[0], with_cond[0], atol=1e-5, rtol=1e-5)
    blind = model(**x, condition_tokens=cond, attention=AttentionOptions(image_sees_condition=False))
    torch.testing.assert_close(blind, base, atol=1e-5, rtol=1e-5)
    stronger = model(**x, condition_tokens=cond, attention=AttentionOptions(condition_strength=3.0))
    assert (stronger - with_cond).abs().max() > 1e-4


def test_condition_token_carries_image_token_position():
    """Swapping two condition tokens together with their positions changes nothing; moving a token's
    content to another position does: condition token i sits at image token i's position."""
    model = ConditionedFlux(tiny_flux())
    x = inputs()
    cond = torch.randn(2, 16, 12)
    out = model(**x, condition_tokens=cond)
    perm = torch.randperm(16)
    permuted = model(**x, condition_tokens=cond[:, perm], condition_ids=x["img_ids"][perm])
    torch.testing.assert_close(permuted, out, atol=1e-5, rtol=1e-5)
    moved = model(**x, condition_tokens=cond[:, perm])
    assert (moved - out).abs().max() > 1e-4
    shifted = model(**x, condition_tokens=cond, condition_ids=x["img_ids"] + torch.tensor([0.0, 0.0, 16.0]))
    assert (shifted - out).abs().max() > 1e-4


def test_text_padding_is_masked():
    model = ConditionedFlux(tiny_flux())
    x = inputs()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 3:] = False
    out = model(**x, text_mask=mask)
    x["text_tokens"][:, 3:] = 100.0
    torch.testing.assert_close(model(**x, text_mask=mask), out, atol=1e-5, rtol=1e-5)


def test_lora_only_on_condition_tokens():
    from peft import LoraConfig

    flux = tiny_flux()
    x = inputs()
    base = native(flux, x)
    cond = torch.randn(2, 16, 12)
    before = ConditionedFlux(flux)(**x, condition_tokens=cond)
    flux.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "proj_mlp", "x_embedder"],
        )
    )
    for name, param in flux.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    everywhere = ConditionedFlux(flux, lora_on="all")
    only_condition = ConditionedFlux(flux, lora_on="condition")
    torch.testing.assert_close(only_condition(**x), base, atol=1e-5, rtol=1e-5)
    assert (everywhere(**x) - base).abs().max() > 1e-3
    after = only_condition(**x, condition_tokens=cond)
    assert (after - before).abs().max() > 1e-4
    assert all(
        layer._disable_adapters is False for layer in flux.modules() if hasattr(layer, "_disable_adapters")
    )


def test_gradient_checkpointing_matches():
    model = ConditionedFlux(tiny_flux())
    x = inputs()
    cond = torch.randn(2, 16, 12)
    model(**x, condition_tokens=cond).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing = True
    model(**x, condition_tokens=cond).square().mean().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-4)


def test_attention_bias_layout():
    assert attention_bias(2, 3, 3, None, None, AttentionOptions(), torch.float32) is None
    bias = attention_bias(2, 3, 3, None, torch.tensor([True, False]), AttentionOptions(), torch.float32)
    assert bias.shape == (2, 1, 8, 8)
    assert torch.isinf(bias[1, 0, :5, 5:]).all() and not torch.isinf(bias[0]).any()
    with pytest.raises(ValueError, match="condition_strength"):
        attention_bias(2, 3, 3, None, None, AttentionOptions(condition_strength=0), torch.float32)


def _paper_lora(flux, std=0.5):
    from peft import LoraConfig

    from facemogle.flux import PAPER_LORA_TARGETS

    flux.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=PAPER_LORA_TARGETS)
    )
    for name, param in flux.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=std)
    return [p for n, p in flux.named_parameters() if "lora_" in n]


def test_condition_lora_leaves_the_callers_adapter_state_alone():
    """A frozen LoRA stays frozen, disable_adapters() stays in force, and nothing toggles per forward."""
    flux = tiny_flux()
    x = inputs()
    cond = torch.randn(2, 16, 12)
    without_lora = ConditionedFlux(tiny_flux())(**x, condition_tokens=cond)
    lora = _paper_lora(flux)
    for param in lora:
        param.requires_grad_(False)
    model = ConditionedFlux(flux, lora_on="condition")
    with_lora = model(**x, condition_tokens=cond)
    assert (with_lora - without_lora).abs().max() > 1e-3
    assert not any(p.requires_grad for p in lora)
    flux.disable_adapters()
    torch.testing.assert_close(model(**x, condition_tokens=cond), without_lora, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(**x, condition_tokens=cond), without_lora, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in lora)


def test_condition_lora_with_a_blind_image_equals_the_base_model_exactly():
    flux = tiny_flux()
    x = inputs()
    base = native(flux, x)
    _paper_lora(flux)
    model = ConditionedFlux(flux, lora_on="condition")
    blind = AttentionOptions(image_sees_condition=False)
    out = model(**x, condition_tokens=torch.randn(2, 16, 12), attention=blind)
    torch.testing.assert_close(out, base, atol=1e-5, rtol=1e-5)


class _RecordingFlux(ConditionedFlux):
    """Keeps the condition stream that leaves the last single-stream block."""

    def _single_block(self, block, *args):
        txt, img, cond = super()._single_block(block, *args)
        self.last_condition = cond
        return txt, img, cond


def test_condition_stream_is_modulated_at_t0_and_blind_to_the_image_it_does_not_see():
    flux = tiny_flux()
    _paper_lora(flux)
    model = _RecordingFlux(flux, lora_on="condition")
    cond = torch.randn(2, 16, 12)
    isolated = AttentionOptions(condition_sees_image=False)
    x = inputs(seed=1)
    model(**x, condition_tokens=cond, attention=isolated)
    first = model.last_condition
    x["timestep"] = 1 - x["timestep"]
    x["noisy_tokens"] = torch.randn_like(x["noisy_tokens"])
    model(**x, condition_tokens=cond, attention=isolated)
    torch.testing.assert_close(model.last_condition, first, atol=1e-6, rtol=1e-6)
    model(**x, condition_tokens=cond)  # seeing the image (and text), it changes
    assert (model.last_condition - first).abs().max() > 1e-4


def test_step_constants_built_once_give_the_same_prediction():
    model = ConditionedFlux(tiny_flux())
    x = inputs()
    cond = torch.randn(2, 16, 12)
    present = torch.tensor([True, False])
    constants = model.prepare(
        x["text_tokens"], x["pooled_text"], x["img_ids"], x["txt_ids"], 16, condition_present=present
    )
    expected = model(**x, condition_tokens=cond, condition_present=present)
    torch.testing.assert_close(model(**x, condition_tokens=cond, constants=constants), expected)


def test_attention_bias_is_built_on_the_given_device():
    bias = attention_bias(
        2, 3, 3, None, None, AttentionOptions(condition_strength=2.0), torch.float32, "meta"
    )
    assert bias.device.type == "meta"


def test_step_constants_trigger_a_model_offload_hook():
    """Under model CPU offload the transformer moves to the GPU on forward; prepare must move it too."""
    model = ConditionedFlux(tiny_flux())
    calls = []

    class Hook:
        def pre_forward(self, module):
            calls.append(module)

    model._hf_hook = Hook()
    x = inputs()
    model.prepare(x["text_tokens"], x["pooled_text"], x["img_ids"], x["txt_ids"])
    assert calls == [model]


def test_a_merged_lora_is_refused_rather_than_applied_to_image_tokens():
    flux = tiny_flux()
    _paper_lora(flux)
    model = ConditionedFlux(flux, lora_on="condition")
    x = inputs()
    for module in flux.modules():
        if hasattr(module, "merge") and hasattr(module, "base_layer"):
            module.merge()
    with pytest.raises(ValueError, match="merged"):
        model(**x, condition_tokens=torch.randn(2, 16, 12))
