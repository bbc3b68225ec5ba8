"""A condition-aware FLUX transformer: diffusers' FluxTransformer2DModel with an extra condition stream.

Condition tokens (MoGLE's fused mask tokens) are embedded by the same x_embedder, pass through every
double- and single-stream block with the same weights as the image tokens, carry the 2-D rotary
positions of the image tokens they describe, and are modulated with the timestep embedding of t = 0
(a clean condition), as in OminiControl. Text, image and condition tokens attend jointly.

The blocks' own submodules are called in the order of diffusers' forwards; nothing in diffusers is
patched. Sequence order inside attention: [text, image, condition].
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
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


class ConditionedFlux(nn.Module):
    """FluxTransformer2DModel + a condition token stream.

    lora_on: "all" runs any LoRA adapters on every token; "condition" enables them only while
    condition tokens are computed (the paper's setting), through peft's enable_adapters switch.
    """

    def __init__(self, flux: nn.Module, lora_on: str = "all"):
        super().__init__()
        if lora_on not in ("all", "condition"):
            raise ValueError(f"lora_on must be 'all' or 'condition', got {lora_on!r}.")
        self.flux = flux
        self.lora_on = lora_on
        self.gradient_checkpointing = False

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
    ) -> torch.Tensor:
        """noisy_tokens [B, N, Cin], timestep t ∈ [0, 1] [B], text_tokens [B, L, Dt], pooled_text [B, Dp],
        condition_tokens [B, M, Cin] (positions condition_ids [M, 3], default img_ids),
        text_mask [B, L] (False = padding), condition_present [B] (False = no mask for that sample)
        → prediction [B, N, Cout]."""
        flux = self.flux
        with self._lora(False):
            img = flux.x_embedder(noisy_tokens)
            temb = self._time_embedding(timestep, guidance, pooled_text, img.dtype)
            txt = flux.context_embedder(text_tokens)
        cond = ctemb = None
        ids = [txt_ids, img_ids]
        if condition_tokens is not None:
            with self._lora(True):
                cond = flux.x_embedder(condition_tokens)
                ctemb = self._time_embedding(torch.zeros_like(timestep), guidance, pooled_text, img.dtype)
            ids.append(img_ids if condition_ids is None else condition_ids)
        rope = flux.pos_embed(torch.cat(ids, dim=0))
        bias = attention_bias(
            txt.shape[1],
            img.shape[1],
            0 if cond is None else cond.shape[1],
            text_mask,
            condition_present,
            attention or AttentionOptions(),
            img.dtype,
        )
        streams = (txt, img, cond)
        for block in flux.transformer_blocks:
            streams = self._run(self._double_block, block, streams, temb, ctemb, rope, bias)
        for block in flux.single_transformer_blocks:
            streams = self._run(self._single_block, block, streams, temb, ctemb, rope, bias)
        with self._lora(False):
            return flux.proj_out(flux.norm_out(streams[1], temb))

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

    @contextlib.contextmanager
    def _lora(self, enabled: bool, module: nn.Module | None = None):
        """Enable or disable the LoRA layers of `module` (default: the whole model) for a token group."""
        if self.lora_on == "all":
            yield
            return
        layers = [
            m for m in (module or self.flux).modules() if hasattr(m, "enable_adapters") and hasattr(m, "r")
        ]
        for layer in layers:
            layer.enable_adapters(enabled)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    def _double_block(self, block, txt, img, cond, temb, ctemb, rope, bias):
        attn = block.attn
        with self._lora(False, block):
            img_normed, *img_mod = block.norm1(img, emb=temb)
            txt_normed, *txt_mod = block.norm1_context(txt, emb=temb)
            qkv = [_text_qkv(attn, txt_normed), _qkv(attn, img_normed)]
        if cond is not None:
            with self._lora(True, block):
                cond_normed, *cond_mod = block.norm1(cond, emb=ctemb)
                qkv.append(_qkv(attn, cond_normed))
        txt_out, img_out, cond_out = _joint_attention(qkv, rope, bias)
        with self._lora(False, block):
            img = _attn_mlp_residual(img, attn.to_out[0](img_out), img_mod, block.norm2, block.ff)
            txt = _attn_mlp_residual(
                txt, attn.to_add_out(txt_out), txt_mod, block.norm2_context, block.ff_context
            )
        if cond is not None:
            with self._lora(True, block):
                cond = _attn_mlp_residual(cond, attn.to_out[0](cond_out), cond_mod, block.norm2, block.ff)
        return txt, img, cond

    def _single_block(self, block, txt, img, cond, temb, ctemb, rope, bias):
        text_length = txt.shape[1]
        main = torch.cat([txt, img], dim=1)  # text and image share weights and modulation here
        with self._lora(False, block):
            main_normed, main_gate = block.norm(main, emb=temb)
            main_mlp = block.act_mlp(block.proj_mlp(main_normed))
            main_q, main_k, main_v = _qkv(block.attn, main_normed)
            qkv = [(main_q[:, :text_length], main_k[:, :text_length], main_v[:, :text_length]),
                   (main_q[:, text_length:], main_k[:, text_length:], main_v[:, text_length:])]  # fmt: skip
        if cond is not None:
            with self._lora(True, block):
                cond_normed, cond_gate = block.norm(cond, emb=ctemb)
                cond_mlp = block.act_mlp(block.proj_mlp(cond_normed))
                qkv.append(_qkv(block.attn, cond_normed))
        txt_out, img_out, cond_out = _joint_attention(qkv, rope, bias)
        with self._lora(False, block):
            main_out = torch.cat([torch.cat([txt_out, img_out], dim=1), main_mlp], dim=2)
            main = main + main_gate[:, None] * block.proj_out(main_out)
        if cond is not None:
            with self._lora(True, block):
                cond = cond + cond_gate[:, None] * block.proj_out(torch.cat([cond_out, cond_mlp], dim=2))
        return main[:, :text_length], main[:, text_length:], cond


def _qkv(attn, x):
    """Image-side projections with QK-norm: x [B, S, D] → three [B, S, H, Dh]."""
    q = attn.norm_q(attn.to_q(x).unflatten(-1, (-1, attn.head_dim)))
    k = attn.norm_k(attn.to_k(x).unflatten(-1, (-1, attn.head_dim)))
    return q, k, attn.to_v(x).unflatten(-1, (-1, attn.head_dim))


def _text_qkv(attn, x):
    """Text-side projections of a double-stream block: x [B, L, D] → three [B, L, H, Dh]."""
    q = attn.norm_added_q(attn.add_q_proj(x).unflatten(-1, (-1, attn.head_dim)))
    k = attn.norm_added_k(attn.add_k_proj(x).unflatten(-1, (-1, attn.head_dim)))
    return q, k, attn.add_v_proj(x).unflatten(-1, (-1, attn.head_dim))


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


def _attn_mlp_residual(x, attn_out, modulation, norm, ff):
    """The second half of a double-stream block for one token group (diffusers' order of operations)."""
    gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
    x = x + gate_msa.unsqueeze(1) * attn_out
    normed = norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    return x + gate_mlp.unsqueeze(1) * ff(normed)


def attention_bias(
    text_length: int,
    image_length: int,
    condition_length: int,
    text_mask: torch.Tensor | None,
    condition_present: torch.Tensor | None,
    options: AttentionOptions,
    dtype: torch.dtype,
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
    device = None if per_sample is None else per_sample.device
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
