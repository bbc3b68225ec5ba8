"""Full scale speed and memory at 512² on one GPU, with nothing to download.

FLUX.1-dev's real transformer (19 double + 38 single blocks, width 3072), VAE, T5-XXL and CLIP-L configs
with random bf16 weights, built on the GPU, wrapped by facemogle's full-scale model (condition stream,
MoGLE, the paper's LoRA). Prints, per configuration (bf16; model CPU offload; torchao int8 weight-only):
seconds per sampling step without and with the condition stream, a default (28-step) generation end to
end (text, mask encoding, sampling, decoding), one LoRA training step with gradient checkpointing, the
text encoding of a training batch, and peak GPU memory; then the same-run ratios. Also int8 + offload.

    python benchmarks/bench_flux.py                       # one CUDA GPU, ~5 minutes on an H100
    python benchmarks/bench_flux.py --tiny --device cpu   # a narrow stack: checks the script on a CPU

Needs torch, diffusers, transformers, peft, safetensors; torchao for the int8 row (skipped without it).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

FLUX_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)  # fmt: skip
FLUX_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False,
)  # fmt: skip
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", is_gated_act=True, dense_act_fn="gelu_new")  # fmt: skip
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, projection_dim=768)  # fmt: skip
TINY = dict(
    transformer=dict(FLUX_DEV, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                     joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6)),
    vae=dict(FLUX_VAE, block_out_channels=(4, 4, 4, 4), layers_per_block=1, norm_num_groups=2),
    t5=dict(T5_XXL, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=2),
    clip=dict(CLIP_L, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
              projection_dim=32),
)  # fmt: skip
PROMPT = "She has long wavy blond hair and is wearing lipstick. She is smiling."


@dataclass
class Row:
    name: str
    cells: dict[str, float | str] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# Building the model with random weights
# ----------------------------------------------------------------------------


def word_tokenizer(folder: str, vocab: int):
    """A word-level tokenizer (no download); tokenizing is not what is timed."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]"] + sorted(set(PROMPT.lower().replace(".", " ").split()))
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words[:vocab])}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_pipeline(configs: dict, device: torch.device, resolution: int):
    """FaceMoGLEPipeline around random FLUX components, created directly in bf16 on `device`."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from facemogle.flux import FluxFaceMoGLE, FluxMoGLEConfig, FluxTextEncoder
    from facemogle.pipeline import FaceMoGLEPipeline

    torch.manual_seed(0)
    with torch.device(device), default_dtype(torch.bfloat16):
        transformer = FluxTransformer2DModel(**configs["transformer"])
        vae = AutoencoderKL(**configs["vae"])
        t5 = T5EncoderModel(T5Config(**configs["t5"]))
        clip = CLIPTextModel(CLIPTextConfig(**configs["clip"]))
    folder = tempfile.mkdtemp()
    text = FluxTextEncoder(
        word_tokenizer(f"{folder}/clip", configs["clip"]["vocab_size"]), clip,
        word_tokenizer(f"{folder}/t5", configs["t5"]["vocab_size"]), t5,
    )  # fmt: skip
    config = FluxMoGLEConfig(flux_folder="(random weights)", resolution=resolution)
    model = FluxFaceMoGLE(config, transformer, vae)
    model.mogle.to(device)
    return FaceMoGLEPipeline(model, text)


# ----------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device, repeats: int = 3) -> float:
    """Median wall time of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict, key: str):
    """Peak GPU memory (GB) allocated inside the block."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        out[key] = torch.cuda.max_memory_allocated(device) / 1e9


def face_mask(resolution: int) -> np.ndarray:
    """A shipped example mask (a SynthFace test item), nearest-neighbour resized."""
    from importlib import resources

    from facemogle.labels import load_mask, resize_labels

    example = resources.files("facemogle") / "assets" / "examples" / "synthface_27001.png"
    return resize_labels(load_mask(str(example)), resolution)


def sampling_steps(pipe, device, resolution, row: Row) -> None:
    """One denoising step (one row) without and with the condition stream, constants built once."""
    model = pipe.model
    text = pipe.text_encoder.encode([PROMPT]).to(device)
    labels = torch.as_tensor(face_mask(resolution))[None].long().to(device)
    condition = model.encode_condition(labels)
    n, c = model.token_shape(resolution)
    x = torch.randn(1, n, c, device=device)
    t = torch.full((1,), 0.5, device=device)
    plain = model.step_constants(text, False)
    conditioned = model.step_constants(text, True)
    with torch.no_grad(), peak_memory(device, row.cells, "peak GB, step"):
        row.cells["step, no condition (s)"] = seconds(lambda: model(x, t, text, constants=plain), device)
        row.cells["step, condition (s)"] = seconds(
            lambda: model(x, t, text, condition, constants=conditioned), device
        )


def generation(pipe, device, resolution, row: Row) -> None:
    """A default full-scale call (the authors' 28 Euler steps, one row each) from a mask and a prompt."""
    mask = face_mask(resolution)
    pipe(prompt=PROMPT, mask=mask, num_inference_steps=2, autocast=False)  # warm-up
    pipe.model._condition_cache.clear()  # the timed call encodes its mask
    with peak_memory(device, row.cells, "peak GB, generation"):
        synchronize(device)
        start = time.perf_counter()
        pipe(prompt=PROMPT, mask=mask, autocast=False)
        synchronize(device)
    row.cells["28-step generation (s)"] = time.perf_counter() - start


def text_encoding(pipe, device, resolution, row: Row, batch: int = 4) -> None:
    """T5-XXL (512 tokens) + CLIP for a training batch of prompts: what a text cache would save per step."""
    prompts = [PROMPT] * batch
    row.cells[f"text encoding, batch {batch} (s)"] = seconds(
        lambda: pipe.text_encoder.encode(prompts), device
    )


def mask_encoding(pipe, device, resolution, row: Row) -> None:
    """One mask's 20 maps through the VAE encoder (one call of vae_batch_size images)."""
    labels = torch.as_tensor(face_mask(resolution))[None].long().to(device)

    def encode():
        pipe.model._condition_cache.clear()
        pipe.model.mask_tokens(labels)

    with peak_memory(device, row.cells, "peak GB, mask encoding"):
        row.cells["mask encoding (s)"] = seconds(encode, device, repeats=2)


def training_step(pipe, device, resolution, row: Row, batch: int = 4) -> None:
    """One LoRA + MoGLE training step (AdamW) with gradient checkpointing, frozen bf16 base."""
    from facemogle.model import StepRandomness

    model = pipe.model
    model.add_lora("gaussian")
    model.requires_grad_(False)
    params = model.trainable_parameters()
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    model.transformer.gradient_checkpointing = True
    model.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    images = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
    labels = torch.as_tensor(np.stack([face_mask(resolution)] * batch)).long().to(device)
    text = pipe.text_encoder.encode([PROMPT] * batch).to(device)
    null = pipe.text_encoder.encode([""]).to(device)
    conditions = model.mask_tokens(labels)

    def step():
        randomness = StepRandomness.draw(0, 0, batch, model.token_shape(resolution)).to(device)
        loss = model.loss(images, labels, text, null, randomness, condition_tokens=conditions)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with peak_memory(device, row.cells, "peak GB, training"):
        row.cells[f"LoRA training step, batch {batch} (s)"] = seconds(step, device, repeats=2)
    model.eval()


def quantize_int8(pipe) -> str | None:
    """torchao int8 weight-only on the transformer's and T5's linear layers (what quantization="int8" loads);
    a note when torchao is missing or fails. The H100 runs in the README quantized the transformer alone."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(pipe.model.transformer.flux, Int8WeightOnlyConfig())
        quantize_(pipe.text_encoder.text_encoder_2, Int8WeightOnlyConfig())  # T5 too, as quantization="int8"
    except Exception as error:  # noqa: BLE001 - the table says why the row is empty
        return f"skipped: torchao int8 ({type(error).__name__}: {error})"
    return None


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------


def stage(row: Row, fn, *args, **kwargs) -> None:
    """Run one measurement; a failure is written into the row (and printed) so the other rows still run."""
    start = time.perf_counter()
    try:
        fn(*args, row, **kwargs)
    except Exception as error:  # noqa: BLE001 - a one-shot GPU run reports every row it can
        traceback.print_exc()
        row.cells[f"{fn.__name__} failed"] = f"{type(error).__name__}: {str(error)[:120]}"
    print(
        f"[{time.strftime('%H:%M:%S')}] {row.name}: {fn.__name__} ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )


def run(args) -> list[Row]:
    device = torch.device(args.device)
    configs = TINY if args.tiny else dict(transformer=FLUX_DEV, vae=FLUX_VAE, t5=T5_XXL, clip=CLIP_L)
    where = (device, args.resolution)
    rows = [measure(Row("bf16"), configs, where, args)]
    if not args.skip_quantized:
        rows.append(measure(Row("int8 weight-only (torchao)"), configs, where, args, quantized=True))
    if not args.skip_offload and device.type == "cuda":
        rows.append(measure(Row("bf16, model CPU offload"), configs, where, args, offload=True))
        if not args.skip_quantized:
            rows.append(
                measure(Row("int8 + model CPU offload"), configs, where, args, quantized=True, offload=True)
            )
    return rows


def measure(
    row: Row, configs: dict, where: tuple, args, quantized: bool = False, offload: bool = False
) -> Row:
    """One configuration's row on a freshly built pipeline: every measurement for plain bf16, the steps
    and a generation when quantized, a generation alone under offload."""
    device = where[0]
    pipe = build_pipeline(configs, *where)
    skipped = quantize_int8(pipe) if quantized else None
    if skipped:
        row.cells["note"] = skipped
    elif offload:
        pipe.enable_model_cpu_offload(device)
        stage(row, generation, pipe, *where)
    else:
        plain = not quantized
        for fn in (
            (sampling_steps, text_encoding, mask_encoding, generation)
            if plain
            else (sampling_steps, generation)
        ):
            stage(row, fn, pipe, *where)
        if plain:
            stage(row, training_step, pipe, *where, batch=args.train_batch)
    del pipe
    release(device)
    print(f"[{time.strftime('%H:%M:%S')}] {row.name}: done", flush=True)
    return row


def report(rows: list[Row]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row.cells))
    print("\n| configuration | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in rows:
        cells = [row.cells.get(c, "–") for c in columns]
        print(
            f"| {row.name} | "
            + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells)
            + " |"
        )
    base = rows[0].cells
    ratios = []
    if "step, condition (s)" in base:
        ratios.append(
            f"condition stream: step ×{base['step, condition (s)'] / base['step, no condition (s)']:.2f}"
        )
    for row in rows[1:]:
        key = "28-step generation (s)"
        if key in row.cells and key in base:
            ratios.append(f"{row.name}: generation ×{row.cells[key] / base[key]:.2f} of bf16")
        if "peak GB, generation" in row.cells and "peak GB, generation" in base:
            ratios.append(
                f"{row.name}: peak memory ×{row.cells['peak GB, generation'] / base['peak GB, generation']:.2f}"
            )
    print("ratios (same run): " + "; ".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--train-batch", type=int, default=4, help="the authors' batch per GPU")
    parser.add_argument("--tiny", action="store_true", help="a narrow stack (to check the script on a CPU)")
    parser.add_argument("--skip-offload", action="store_true")
    parser.add_argument("--skip-quantized", action="store_true")
    parser.add_argument("--json", help="also write the table to this file")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench_flux.py needs a CUDA GPU (FLUX.1-dev at 512²); use --tiny --device cpu to check it."
        )
    if torch.device(args.device).type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rows = run(args)
    report(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({row.name: row.cells for row in rows}, f, indent=2)


if __name__ == "__main__":
    main()
