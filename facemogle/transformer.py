"""A condition-aware FLUX transformer: diffusers' FluxTransformer2DModel with an extra condition stream.

Condition tokens (MoGLE's fused mask tokens) are embedded by the same x_embedder, pass through every
double- and single-stream block with the same weights as the image tokens, carry the 2-D rotary
positions of the image tokens they describe, and are modulated with the timestep embedding of t = 0
(a clean condition), as in OminiControl. Text, image and condition tokens attend jointly.

The blocks' own submodules are called in the order of diffusers' forwards; nothing in diffusers is
patched. Sequence order inside attention: [text, image, condition].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class AttentionOptions:
    """How image and condition tokens see each other.

    image_sees_condition: text and image queries attend to condition keys.
    condition_sees_image: condition queries attend to text and image keys.
    condition_strength: multiplies image↔condition attention weights (a log-bias on the scores).
    """

    image_sees_condition: bool = True
    condition_sees_image: bool = True
    condition_strength: float = 1.0


def image_ids(height_tokens: int, width_tokens: int, device=None) -> torch.Tensor:
    """FLUX positions of an image token grid: [H*W, 3] rows of (0, row, column)."""
    rows = torch.arange(height_tokens, device=device).repeat_interleave(width_tokens)
    cols = torch.arange(width_tokens, device=device).repeat(height_tokens)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).float()


def text_ids(length: int, device=None) -> torch.Tensor:
    """FLUX text positions: all zeros, [L, 3]."""
    return torch.zeros(length, 3, device=device)


@dataclass
class StepConstants:
    """What every denoising step of one call shares: built once by `ConditionedFlux.prepare`."""

    text: torch.Tensor  # [B, L, D] text tokens after the context embedder
    condition_temb: torch.Tensor | None  # [B, D] the t = 0 modulation of condition tokens
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin over [text, image, condition] positions
    bias: torch.Tensor | None  # [B or 1, 1, S, S] additive attention bias, None when all see all


class ConditionedFlux(nn.Module):
    """FluxTransformer2DModel + a condition token stream.

    lora_on: "all" runs any LoRA adapters on every token; "condition" runs them only on condition
    tokens (the paper's setting). Text and image tokens call the LoRA layers' base layers directly, so
    the adapters' own state (enabled, trainable) is never changed and two threads can share the model.
    """

    def __init__(self, flux: nn.Module, lora_on: str = "all"):
        super().__init__()
        if lora_on not in ("all", "condition"):
            raise ValueError(f"lora_on must be 'all' or 'condition', got {lora_on!r}.")
        self.flux = flux
        self.lora_on = lora_on
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights compute in; inputs are cast to it (bf16 weights run without autocast)."""
        return self.flux.dtype

    @apply_forward_hook  # under model CPU offload, moves the transformer to the GPU as forward does
    def prepare(
        self,
        text_tokens: torch.Tensor,
        pooled_text: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        condition_length: int = 0,
        condition_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        condition_present: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        attention: AttentionOptions | None = None,
    ) -> StepConstants:
        """The per-call constants: embedded text, the condition modulation, rotary embeddings, attention bias."""
        flux, dtype = self.flux, self.dtype
        text = _linear(flux.context_embedder, text_tokens.to(dtype), self.lora_on == "all")
        ids = [txt_ids, img_ids]
        condition_temb = None
        if condition_length:
            zero = torch.zeros(text.shape[0], device=text.device)
            condition_temb = self._time_embedding(zero, guidance, pooled_text.to(dtype), dtype)
            ids.append(img_ids if condition_ids is None else condition_ids)
        bias = attention_bias(
            text.shape[1], img_ids.shape[0], condition_length, text_mask, condition_present,
            attention or AttentionOptions(), dtype, img_ids.device,
        )  # fmt: skip
        return StepConstants(text, condition_temb, flux.pos_embed(torch.cat(ids, dim=0)), bias)

    def forward(
        self,
        noisy_tokens: torch.Tensor,
        timestep: torch.Tensor,
        text_tokens: torch.Tensor,
        pooled_text: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        condition_tokens: torch.Tensor | None = None,
        condition_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        condition_present: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        attention: AttentionOptions | None = None,
        constants: StepConstants | None = None,
    ) -> torch.Tensor:
        """noisy_tokens [B, N, Cin], timestep t ∈ [0, 1] [B], text_tokens [B, L, Dt], pooled_text [B, Dp],
        condition_tokens [B, M, Cin] (positions condition_ids [M, 3], default img_ids),
        text_mask [B, L] (False = padding), condition_present [B] (False = no mask for that sample)
        → prediction [B, N, Cout]. constants: from `prepare` with the same arguments (a sampler builds
        them once per call); text tokens, ids, masks and attention options then come from them."""
        flux, dtype, lora_everywhere = self.flux, self.dtype, self.lora_on == "all"
        if constants is None:
            constants = self.prepare(
                text_tokens, pooled_text, img_ids, txt_ids,
                0 if condition_tokens is None else condition_tokens.shape[1],
                condition_ids, text_mask, condition_present, guidance, attention,
            )  # fmt: skip
        img = _linear(flux.x_embedder, noisy_tokens.to(dtype), lora_everywhere)  # [B, N, D]
        temb = self._time_embedding(timestep, guidance, pooled_text.to(dtype), dtype)  # [B, D]
        cond = None
        if condition_tokens is not None:
            cond = flux.x_embedder(condition_tokens.to(dtype))  # [B, M, D], with the LoRA
        streams = (constants.text, img, cond)
        ctemb, rope, bias = constants.condition_temb, constants.rope, constants.bias
        for block in flux.transformer_blocks:
            streams = self._run(self._double_block, block, streams, temb, ctemb, rope, bias)
        for block in flux.single_transformer_blocks:
            streams = self._run(self._single_block, block, streams, temb, ctemb, rope, bias)
        return _linear(flux.proj_out, flux.norm_out(streams[1], temb), lora_everywhere)  # [B, N, Cout]

    def _time_embedding(self, t, guidance, pooled, dtype) -> torch.Tensor:
        # diffusers' Flux scales t ∈ [0, 1] (and guidance) by 1000 before its sinusoidal embedding.
        t = t.to(dtype) * 1000
        if guidance is None:
            return self.flux.time_text_embed(t, pooled)
        return self.flux.time_text_embed(t, guidance.to(dtype) * 1000, pooled)

    def _run(self, fn, block, streams, temb, ctemb, rope, bias):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, block, *streams, temb, ctemb, rope, bias, use_reentrant=False)
        return fn(block, *streams, temb, ctemb, rope, bias)

    def _double_block(self, block, txt, img, cond, temb, ctemb, rope, bias):
        attn, lora = block.attn, self.lora_on == "all"
        # prepare text and image for attention (LoRA only when it runs on every token)
        img_normed, *img_mod = _ada_norm(block.norm1, img, temb, lora)
        txt_normed, *txt_mod = _ada_norm(block.norm1_context, txt, temb, lora)
        qkv = [_text_qkv(attn, txt_normed, lora), _qkv(attn, img_normed, lora)]
        # prepare condition tokens for attention (LoRA on), modulated at t = 0
        if cond is not None:
            cond_normed, *cond_mod = _ada_norm(block.norm1, cond, ctemb, True)
            qkv.append(_qkv(attn, cond_normed, True))
        # joint attention over [text, image, condition]
        txt_out, img_out, cond_out = _joint_attention(qkv, rope, bias)
        # the image, text and condition residual branches
        img = _attn_mlp_residual(
            img, _linear(attn.to_out[0], img_out, lora), img_mod, block.norm2, block.ff, lora
        )
        txt = _attn_mlp_residual(
            txt, _linear(attn.to_add_out, txt_out, lora), txt_mod, block.norm2_context, block.ff_context, lora
        )
        if cond is not None:
            cond_attn = attn.to_out[0](cond_out)
            cond = _attn_mlp_residual(cond, cond_attn, cond_mod, block.norm2, block.ff, True)
        return txt, img, cond

    def _single_block(self, block, txt, img, cond, temb, ctemb, rope, bias):
        text_length, lora = txt.shape[1], self.lora_on == "all"
        # prepare text + image (shared weights and modulation here) for attention and the MLP
        main = torch.cat([txt, img], dim=1)  # [B, L + N, D]
        main_normed, main_gate = _ada_norm(block.norm, main, temb, lora)
        main_mlp = block.act_mlp(_linear(block.proj_mlp, main_normed, lora))
        main_q, main_k, main_v = _qkv(block.attn, main_normed, lora)
        qkv = [(main_q[:, :text_length], main_k[:, :text_length], main_v[:, :text_length]),
               (main_q[:, text_length:], main_k[:, text_length:], main_v[:, text_length:])]  # fmt: skip
        # prepare condition tokens (LoRA on), modulated at t = 0
        if cond is not None:
            cond_normed, cond_gate = _ada_norm(block.norm, cond, ctemb, True)
            cond_mlp = block.act_mlp(block.proj_mlp(cond_normed))
            qkv.append(_qkv(block.attn, cond_normed, True))
        # joint attention, then each group's output projection and gated residual
        txt_out, img_out, cond_out = _joint_attention(qkv, rope, bias)
        main_out = torch.cat([torch.cat([txt_out, img_out], dim=1), main_mlp], dim=2)
        main = main + main_gate[:, None] * _linear(block.proj_out, main_out, lora)
        if cond is not None:
            cond = cond + cond_gate[:, None] * block.proj_out(torch.cat([cond_out, cond_mlp], dim=2))
        return main[:, :text_length], main[:, text_length:], cond


def _linear(layer: nn.Module, x: torch.Tensor, lora: bool) -> torch.Tensor:
    """A layer with its peft LoRA on, or its base layer alone; the adapters' state is left untouched."""
    if lora or not hasattr(layer, "base_layer"):
        return layer(x)
    if getattr(layer, "merged", False):
        raise ValueError(
            "A LoRA merged into the base weights (fuse_lora / merge_adapter) would act on image and text "
            "tokens too; unmerge it (unfuse_lora) to keep it on the condition tokens."
        )
    return layer.base_layer(x)


def _ada_norm(norm, x, emb, lora):
    """diffusers' AdaLayerNormZero (6 chunks) and AdaLayerNormZeroSingle (3), with norm.linear's LoRA
    on or off: returns the modulated x and the remaining chunks (gates, MLP shift and scale)."""
    emb = _linear(norm.linear, norm.silu(emb), lora)  # [B, k·D]
    shift, scale, *rest = emb.chunk(emb.shape[1] // x.shape[-1], dim=1)
    return norm.norm(x) * (1 + scale[:, None]) + shift[:, None], *rest


def _feed_forward(ff, x, lora):
    """diffusers' FeedForward (GELU projection, dropout, linear) with its LoRA layers on or off."""
    for module in ff.net:
        x = (
            module.gelu(_linear(module.proj, x, lora))
            if hasattr(module, "proj")
            else _linear(module, x, lora)
        )
    return x


def _qkv(attn, x, lora):
    """Image-side projections with QK-norm: x [B, S, D] → three [B, S, H, Dh]."""
    q = attn.norm_q(_linear(attn.to_q, x, lora).unflatten(-1, (-1, attn.head_dim)))
    k = attn.norm_k(_linear(attn.to_k, x, lora).unflatten(-1, (-1, attn.head_dim)))
    return q, k, _linear(attn.to_v, x, lora).unflatten(-1, (-1, attn.head_dim))


def _text_qkv(attn, x, lora):
    """Text-side projections of a double-stream block: x [B, L, D] → three [B, L, H, Dh]."""
    q = attn.norm_added_q(_linear(attn.add_q_proj, x, lora).unflatten(-1, (-1, attn.head_dim)))
    k = attn.norm_added_k(_linear(attn.add_k_proj, x, lora).unflatten(-1, (-1, attn.head_dim)))
    return q, k, _linear(attn.add_v_proj, x, lora).unflatten(-1, (-1, attn.head_dim))


def _joint_attention(qkv, rope, bias):
    """Attention over the concatenated token groups; returns each group's output [B, S_g, H*Dh]."""
    sizes = [q.shape[1] for q, _, _ in qkv]
    q, k, v = (torch.cat([group[i] for group in qkv], dim=1) for i in range(3))  # [B, S, H, Dh]
    q = apply_rotary_emb(q, rope, sequence_dim=1)
    k = apply_rotary_emb(k, rope, sequence_dim=1)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=None if bias is None else bias.to(q.dtype),
    )  # [B, H, S, Dh]
    out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)  # [B, S, H*Dh]
    return list(out.split(sizes, dim=1)) + [None] * (3 - len(sizes))


def _attn_mlp_residual(x, attn_out, modulation, norm, ff, lora):
    """The second half of a double-stream block for one token group (diffusers' order of operations)."""
    gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
    x = x + gate_msa.unsqueeze(1) * attn_out
    normed = norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    return x + gate_mlp.unsqueeze(1) * _feed_forward(ff, normed, lora)


def attention_bias(
    text_length: int,
    image_length: int,
    condition_length: int,
    text_mask: torch.Tensor | None,
    condition_present: torch.Tensor | None,
    options: AttentionOptions,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Additive attention bias [B or 1, 1, S, S] over [text, image, condition], or None when all see all."""
    main = text_length + image_length
    total = main + condition_length
    needs_bias = text_mask is not None and not bool(text_mask.all())
    if condition_length:
        needs_bias = needs_bias or condition_present is not None and not bool(condition_present.all())
        needs_bias = needs_bias or not (options.image_sees_condition and options.condition_sees_image)
        needs_bias = needs_bias or options.condition_strength != 1.0
    if not needs_bias:
        return None
    per_sample = text_mask if text_mask is not None else condition_present
    batch = 1 if per_sample is None else per_sample.shape[0]
    allowed = torch.ones(batch, total, total, dtype=torch.bool, device=device)  # [B, query, key]
    if text_mask is not None:
        allowed[:, :, :text_length] &= text_mask.bool()[:, None, :]
    bias = torch.zeros(batch, total, total, dtype=torch.float32, device=device)
    if condition_length:
        if condition_present is not None:
            allowed[:, :main, main:] &= condition_present.bool().view(-1, 1, 1)
        if not options.image_sees_condition:
            allowed[:, :main, main:] = False
        if not options.condition_sees_image:
            allowed[:, main:, :main] = False
        if options.condition_strength <= 0:
            raise ValueError(f"condition_strength must be > 0, got {options.condition_strength}.")
        log_strength = math.log(options.condition_strength)
        bias[:, text_length:main, main:] = log_strength
        bias[:, main:, text_length:main] = log_strength
    bias = bias.masked_fill(~allowed, float("-inf"))
    return bias.unsqueeze(1).to(dtype)  # [B, 1, S, S]
