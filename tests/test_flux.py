"""The full scale on a tiny FLUX stack built in the test, saved in the diffusers layout, loaded like FLUX.1-dev."""

import contextlib
import json
import re
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import face_like_labels, word_tokenizer

from facemogle.watermark import read

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("flux")
    torch.manual_seed(0)
    FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    ).save_pretrained(root / "transformer")  # fmt: skip
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=2,
        shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False,
    ).save_pretrained(root / "vae")  # fmt: skip
    CLIPTextModel(CLIPTextConfig(vocab_size=32, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=77)).save_pretrained(root / "text_encoder")  # fmt: skip
    T5EncoderModel(
        T5Config(vocab_size=32, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=2)
    ).save_pretrained(root / "text_encoder_2")
    word_tokenizer(root / "tokenizer")
    word_tokenizer(root / "tokenizer_2")
    FlowMatchEulerDiscreteScheduler().save_pretrained(root / "scheduler")
    return root


@pytest.fixture
def flux_pipe(flux_folder):
    from facemogle.pipeline import FaceMoGLEPipeline

    torch.manual_seed(1)
    return FaceMoGLEPipeline.from_flux(flux_folder, resolution=64)


@contextlib.contextmanager
def _counting_vae_encodes():
    """The batch size of every VAE encoder call made inside the block."""
    from diffusers import AutoencoderKL

    encoded = []
    original = AutoencoderKL.encode

    def counting(self, x, *args, **kwargs):
        encoded.append(x.shape[0])
        return original(self, x, *args, **kwargs)

    with mock.patch.object(AutoencoderKL, "encode", counting):
        yield encoded


def _randomise_lora(model):
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)


def test_missing_folders_get_clear_errors(tmp_path, flux_folder):
    from facemogle.flux import FluxFolderError
    from facemogle.pipeline import FaceMoGLEPipeline

    with pytest.raises(FluxFolderError, match="nothing is downloaded"):
        FaceMoGLEPipeline.from_flux(tmp_path / "nope")
    (tmp_path / "partial" / "vae").mkdir(parents=True)
    with pytest.raises(FluxFolderError, match="missing"):
        FaceMoGLEPipeline.from_flux(tmp_path / "partial")
    with pytest.raises(FluxFolderError, match="LoRA file"):
        FaceMoGLEPipeline.from_flux(flux_folder, lora=tmp_path / "none.safetensors", resolution=64)


@pytest.mark.parametrize("dtype, resolution", [(torch.float32, 64), (torch.bfloat16, 512)])
def test_compile_traces_the_full_scale_transformer(flux_folder, dtype, resolution, fresh_dynamo):
    """pipe.compile() at full scale, at the paper's configuration too (512², bf16 weights, autocast off): the
    LoRA-wrapped FLUX transformer runs traced (a recording backend: each graph runs as traced) and samples the
    face it samples eagerly."""
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.from_flux(flux_folder, dtype=dtype, resolution=resolution)
    kwargs = dict(prompt="she has blond hair", mask=face_like_labels(resolution), num_inference_steps=2, seed=0,
                  autocast=False, output_type="np")  # fmt: skip
    eager = pipe(**kwargs)
    graphs = []
    pipe.compile(backend=lambda graph, example_inputs: graphs.append(graph) or graph.forward)
    np.testing.assert_allclose(pipe(**kwargs), eager, atol=1e-5)
    assert graphs


@pytest.mark.parametrize("mode", ["mask", "text", "both"])
def test_generates_in_all_modes(flux_pipe, mode):
    prompt = "she has blond hair" if mode != "mask" else None
    mask = face_like_labels(64) if mode != "text" else None
    images = flux_pipe(prompt=prompt, mask=mask, num_inference_steps=2, num_images=1, autocast=False)
    assert images[0].size == (64, 64)


def test_pack_round_trip_and_vae_encodes_all_maps_once(flux_pipe):
    from facemogle.flux import pack, unpack

    latents = torch.randn(2, 16, 8, 6)
    assert torch.equal(unpack(pack(latents), 4, 3), latents)
    model = flux_pipe.model
    calls = []
    original = model.vae.encode

    def counting(x):
        calls.append(x.shape[0])
        return original(x)

    model.vae.encode = counting
    try:
        labels = torch.as_tensor(np.stack([face_like_labels(64)] * 2)).long()
        tokens = model.mask_tokens(labels)
        assert tokens.shape == (2, 20, 16, 64)
        assert calls == [20]  # one VAE call for the 20 maps of the one distinct mask
        model.mask_tokens(labels)
        assert calls == [20]  # cached
    finally:
        del model.vae.encode


def test_lora_targets_condition_only_and_diffusers_round_trip(flux_pipe, tmp_path):
    from facemogle.flux import PAPER_LORA_TARGETS

    model = flux_pipe.model
    flux = model.transformer.flux
    x = torch.randn(1, 16, 64)
    t = torch.tensor([0.5])
    text = flux_pipe.text_encoder.encode(["she is smiling"])
    with torch.no_grad():
        base = model(x, t, text)
    model.add_lora()
    _randomise_lora(model)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in flux.named_parameters() if ".lora_A." in n}
    expected = {n for n, _ in flux.named_modules() if re.fullmatch(PAPER_LORA_TARGETS, n)}
    assert adapted == expected and "x_embedder" in adapted and "transformer_blocks.0.ff.net.2" in adapted
    assert not any("add_q_proj" in n or "ff_context" in n or "proj_out" == n for n in adapted)
    labels = torch.as_tensor(face_like_labels(64))[None].long()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, text), base, atol=1e-5, rtol=1e-5)  # no condition: LoRA idle
        conditioned = model(x, t, text, model.encode_condition(labels))
    path = model.save_lora(tmp_path)
    from safetensors.torch import load_file

    assert all(k.startswith("transformer.") for k in load_file(path))
    from facemogle.pipeline import FaceMoGLEPipeline

    fresh = FaceMoGLEPipeline.from_flux(flux_pipe.config.flux_folder, lora=path, resolution=64)
    fresh.model.mogle.load_state_dict(model.mogle.state_dict())
    with torch.no_grad():
        again = fresh.model(x, t, text, fresh.model.encode_condition(labels))
    torch.testing.assert_close(again, conditioned, atol=1e-5, rtol=1e-5)


def test_save_and_load_pretrained_with_released_mogle_layout(flux_pipe, tmp_path):
    from facemogle.mogle import MoGLE
    from facemogle.pipeline import FaceMoGLEPipeline

    flux_pipe.model.add_lora()
    _randomise_lora(flux_pipe.model)
    flux_pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "pytorch_lora_weights.safetensors").is_file()
    official = torch.load(tmp_path / "saved" / "global_local_mask_moe.pt", weights_only=True)
    assert "gating.timestep_embedding.linear_1.weight" in official
    assert torch.equal(MoGLE.from_official(official).w1, flux_pipe.model.mogle.w1)
    loaded = FaceMoGLEPipeline.from_pretrained(tmp_path / "saved")
    kwargs = dict(prompt="a woman", mask=face_like_labels(64), num_inference_steps=2, seed=3, autocast=False)
    np.testing.assert_array_equal(np.asarray(loaded(**kwargs)[0]), np.asarray(flux_pipe(**kwargs)[0]))
    via_pt = FaceMoGLEPipeline.from_flux(flux_pipe.config.flux_folder, lora=tmp_path / "saved" / "pytorch_lora_weights.safetensors",
                                         mogle=tmp_path / "saved" / "global_local_mask_moe.pt", resolution=64)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(via_pt(**kwargs)[0]), np.asarray(flux_pipe(**kwargs)[0]))


def test_training_step_changes_only_lora_and_mogle(flux_pipe):
    from facemogle.model import StepRandomness

    model = flux_pipe.model
    model.add_lora()
    trainable = model.trainable_parameters()
    for param in model.parameters():
        param.requires_grad_(False)
    for param in trainable:
        param.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    labels = torch.as_tensor(np.stack([face_like_labels(64)] * 2)).long()
    text = flux_pipe.text_encoder.encode(["she has blond hair", "he is smiling"])
    null = flux_pipe.text_encoder.encode([""])
    loss = model.loss(images, labels, text, null, StepRandomness.draw(0, 0, 2, model.token_shape(64)))
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n or n.startswith("mogle.") for n in changed)
    assert any("lora_" in n for n in changed) and any(n.startswith("mogle.") for n in changed)


def test_train_backend_flux_learns_lora_and_mogle_with_the_condition_cache(flux_folder, tmp_path, capsys):
    """`facemogle train --backend flux`: each mask and image is VAE-encoded once (the disk cache serves every
    later epoch and the resumed run), only LoRA + MoGLE are checkpointed, and the exported folder generates."""
    from safetensors.torch import load_file

    from facemogle.cli import main
    from facemogle.data.synthface import write_synthface
    from facemogle.pipeline import FaceMoGLEPipeline

    data = write_synthface(tmp_path / "sf", 4, size=64, progress=False)

    args = ["train", "--backend", "flux", "--flux", str(flux_folder), "--data", str(data), "--out", str(tmp_path / "run"),
            "--resolution", "64", "--batch-size", "2", "--steps", "6", "--warmup", "1", "--sample-every", "0",
            "--checkpoint-every", "3", "--mixed-precision", "no", "--gradient-checkpointing", "true", "--seed", "0"]  # fmt: skip
    with _counting_vae_encodes() as encoded:
        assert main([*args, "--steps", "3"]) == 0
        assert main([*args, "--resume"]) == 0
    manifest = json.loads((tmp_path / "run" / "condition_cache" / "manifest.json").read_text())
    train_items = len(manifest["items"])
    assert 2 <= train_items <= 4  # six images per run, so every mask is served again from the cache
    # each mask's 20 maps and each image encoded exactly once, over both runs (the image latents are
    # cached beside the conditions, not encoded at every step)
    assert sorted(encoded) == sorted([20] * train_items + [train_items])
    assert manifest["images"] is True
    checkpoint = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert checkpoint["step"] == 6
    assert all("lora_" in n or n.startswith("mogle.") for n in checkpoint["model"])
    model = tmp_path / "run" / "model"
    assert {"pytorch_lora_weights.safetensors", "mogle.safetensors", "global_local_mask_moe.pt"} <= {
        p.name for p in model.iterdir()
    }
    lora = load_file(model / "pytorch_lora_weights.safetensors")
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it learnt
    pipe = FaceMoGLEPipeline.from_pretrained(model)
    assert pipe.config.guidance == 3.5  # FLUX's sampling guidance in the saved config
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exported")]) == 0
    exported = load_file(tmp_path / "exported" / "mogle.safetensors")
    assert all(
        torch.equal(v, load_file(model / "mogle.safetensors")[k]) for k, v in exported.items()
    )  # both EMA
    assert pipe(prompt="she has blond hair", mask=face_like_labels(64), num_inference_steps=2)[0].size == (
        64,
        64,
    )


@pytest.mark.parametrize(
    "option", ["enable_model_cpu_offload", "enable_sequential_cpu_offload", "enable_vae_slicing"]
)
def test_memory_options_keep_the_output(flux_folder, option):
    """CPU offload through accelerate hooks (to the CPU here; the same hooks serve a GPU) and VAE slicing."""
    from facemogle.pipeline import FaceMoGLEPipeline

    torch.manual_seed(1)
    pipe = FaceMoGLEPipeline.from_flux(flux_folder, resolution=64)
    kwargs = dict(
        prompt="she has blond hair",
        mask=face_like_labels(64),
        num_inference_steps=2,
        num_images=2,
        autocast=False,
    )
    before = np.stack([np.asarray(image) for image in pipe(**kwargs)]).astype(int)
    getattr(pipe, option)(*(["cpu"] if "offload" in option else []))
    after = np.stack([np.asarray(image) for image in pipe(**kwargs)]).astype(int)
    assert np.abs(before - after).max() <= 1
    if option == "enable_sequential_cpu_offload":
        assert any(
            p.device.type == "meta" for p in pipe.model.transformer.parameters()
        )  # weights live off-device


def test_vae_tiling_and_compact_scale_errors(flux_folder, tiny_pipe):
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.from_flux(flux_folder, resolution=64)
    pipe.enable_vae_tiling()
    assert pipe.model.vae.use_tiling
    assert pipe(prompt="she is smiling", num_inference_steps=1)[0].size == (64, 64)
    with pytest.raises(ValueError, match="full scale"):
        tiny_pipe.enable_vae_tiling()
    with pytest.raises(ValueError, match="full scale"):
        tiny_pipe.enable_model_cpu_offload("cpu")


def test_generate_cli_on_a_saved_full_scale_folder_with_memory_options(flux_pipe, tmp_path):
    from PIL import Image

    from facemogle.cli import main

    flux_pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "face.png"
    args = ["generate", "--model", str(tmp_path / "model"), "--prompt", "she has blond hair", "--steps", "1",
            "--out", str(out), "--device", "cpu", "--offload", "sequential", "--vae-tiling"]  # fmt: skip
    assert main(args) == 0
    assert Image.open(out).size == (64, 64)


def _count_rows(transformer):
    """Record the batch (rows) of every transformer forward."""
    rows = []
    transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows


def test_paper_configuration_512_bf16_weights_without_autocast(flux_folder):
    """512×512 mask and prompt, bf16 weights, autocast off, the default full-scale sampler: 28 steps, one row each."""
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.from_flux(flux_folder, dtype=torch.bfloat16)
    assert pipe.model.resolution == 512 and pipe.model.transformer.dtype == torch.bfloat16
    rows = _count_rows(pipe.model.transformer)
    mask = face_like_labels(512)
    images = pipe(prompt="she has blond hair", mask=mask, autocast=False)
    assert images[0].size == (512, 512) and np.asarray(images[0]).std() > 0
    assert rows == [1] * 28
    assert read(images[0]).marked  # full-scale outputs are watermarked by default
    rows.clear()
    text_only = pipe(prompt="she has blond hair", num_inference_steps=2, autocast=False, output_type="np")
    assert text_only.shape == (1, 512, 512, 3) and rows == [1, 1]  # the all-background mask: one row


def test_condition_cache_holds_any_mask_size_and_never_drops_a_batch_it_is_serving(flux_pipe):
    model = flux_pipe.model
    model.config.condition_cache_bytes = 1  # keeps one mask at most
    masks = [face_like_labels(64)] + [np.full((64, 64), k, np.uint8) for k in range(1, 5)]
    labels = torch.as_tensor(np.stack(masks + masks[:2])).long()
    calls = []
    original = model.vae.encode
    model.vae.encode = lambda x: calls.append(x.shape[0]) or original(x)
    try:
        tokens = model.mask_tokens(labels)
    finally:
        del model.vae.encode
    assert len(model._condition_cache) == 1 and max(calls) <= 20 and sum(calls) == 5 * 20
    for i, mask in enumerate(masks + masks[:2]):
        model._condition_cache.clear()
        torch.testing.assert_close(tokens[i], model.mask_tokens(torch.as_tensor(mask)[None].long())[0])


def test_the_authors_text_only_input_and_the_dropped_stream(flux_pipe):
    from facemogle.labels import split_mask

    rows = _count_rows(flux_pipe.model.transformer)
    background = split_mask(torch.zeros(1, 4, 4, dtype=torch.long))[0]  # [20, 3, H, W]
    assert background[0].max() == 0 and background[1].min() == 1 and background[2:].max() == 0
    kwargs = dict(
        prompt="she has blond hair", num_inference_steps=2, seed=0, autocast=False, output_type="pt"
    )
    authors = flux_pipe(**kwargs)
    assert flux_pipe.config.sampling.text_only == "background" and rows == [1, 1]
    torch.testing.assert_close(authors, flux_pipe(mask=np.zeros((64, 64), np.uint8), **kwargs))
    rows.clear()
    dropped = flux_pipe(text_only="dropped", **kwargs)
    assert rows == [1, 1] and (dropped - authors).abs().max() > 1e-4
    with pytest.raises(ValueError, match="text_only"):
        flux_pipe(text_only="none", **kwargs)


def test_quantized_loading_generates_with_the_lora_and_with_offload(flux_pipe, flux_folder, tmp_path):
    pytest.importorskip("torchao")
    from facemogle.pipeline import FaceMoGLEPipeline
    from facemogle.quantization import QuantizationError

    flux_pipe.model.add_lora()
    _randomise_lora(flux_pipe.model)
    flux_pipe.save_pretrained(tmp_path / "saved")
    pipe = FaceMoGLEPipeline.from_pretrained(tmp_path / "saved", dtype=torch.bfloat16, quantization="int8")
    weight = pipe.model.transformer.flux.transformer_blocks[0].attn.to_q.base_layer.weight
    assert "Int8" in type(weight).__name__  # quantized base under the LoRA
    assert (
        "Int8"
        in type(pipe.text_encoder.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight).__name__
    )
    kwargs = dict(
        prompt="she has blond hair", mask=face_like_labels(64), num_inference_steps=2, autocast=False
    )
    quantized = np.asarray(pipe(**kwargs, output_type="np"))
    plain = np.asarray(
        FaceMoGLEPipeline.from_pretrained(tmp_path / "saved", dtype=torch.bfloat16)(
            **kwargs, output_type="np"
        )
    )
    assert np.abs(quantized - plain).mean() < 0.05  # int8 weights stay close to bf16
    pipe.enable_model_cpu_offload("cpu")
    np.testing.assert_allclose(pipe(**kwargs, output_type="np"), quantized, atol=1e-6)
    with pytest.raises(QuantizationError, match="choose one of"):
        FaceMoGLEPipeline.from_flux(flux_folder, resolution=64, quantization="int3")
    with pytest.raises(QuantizationError, match="CUDA only"):
        FaceMoGLEPipeline.from_flux(flux_folder, resolution=64, quantization="nf4")


@pytest.mark.slow
def test_train_backend_flux_on_300_masks_bounded_vae_calls_and_a_text_cache(flux_folder, tmp_path):
    """More distinct masks than any in-memory cache holds; no VAE call sees more than 80 images."""

    from facemogle.cli import main
    from facemogle.data.synthface import write_synthface

    data = write_synthface(tmp_path / "sf", 340, size=64, progress=False)

    args = ["train", "--backend", "flux", "--flux", str(flux_folder), "--data", str(data), "--out", str(tmp_path / "run"),
            "--resolution", "64", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--sample-every", "0",
            "--mixed-precision", "no", "--text-cache", "true"]  # fmt: skip
    with _counting_vae_encodes() as encoded:
        assert main(args) == 0
    manifest = json.loads((tmp_path / "run" / "condition_cache" / "manifest.json").read_text())
    items = len(manifest["items"])
    assert items >= 300 and manifest["images"]
    assert max(encoded) <= 80 and sum(encoded) == 21 * items  # 20 maps + 1 image per item, once
    text = json.loads((tmp_path / "run" / "text_cache" / "manifest.json").read_text())
    assert len(text["items"]) >= items  # every caption of every training item


def test_generate_and_eval_load_full_scale_folders_with_the_same_options(flux_pipe, tmp_path):
    import argparse

    from facemogle.cli import UsageError, _load_pipeline

    flux_pipe.save_pretrained(tmp_path / "saved")

    def options(**kw):
        return argparse.Namespace(**{"model": str(tmp_path / "saved"), "dtype": "auto", "offload": None,
                                     "vae_tiling": False, "quantize": None, "compile": False, **kw})  # fmt: skip

    assert _load_pipeline(options(), "cpu").model.transformer.dtype == torch.float32  # auto on a CPU
    pipe = _load_pipeline(options(dtype="bfloat16"), "cpu")
    assert pipe.model.transformer.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in pipe.model.transformer.parameters())  # no autocast weight copies
    with pytest.raises(UsageError, match="cannot be offloaded"):
        _load_pipeline(options(quantize="nf4", offload="model"), "cuda")


def test_a_lora_on_layers_every_token_shares_is_refused(flux_pipe, flux_folder, tmp_path):
    from peft import LoraConfig

    from facemogle.flux import FluxFolderError
    from facemogle.pipeline import FaceMoGLEPipeline

    flux = flux_pipe.model.transformer.flux
    flux.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "time_text_embed.timestep_embedder.linear_1"])
    )
    path = flux_pipe.model.save_lora(tmp_path)
    fresh = FaceMoGLEPipeline.from_flux(flux_folder, resolution=64)
    with pytest.raises(FluxFolderError, match="time_text_embed"):
        fresh.model.load_lora(path)


def test_edit_at_full_scale_grows_the_region_to_16_px_tokens_and_pastes_the_source_back(flux_pipe):
    from PIL import Image

    from facemogle.edit import EditError

    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    labels = face_like_labels(64)
    new = labels.copy()
    new[20:24, 20:24] = 3  # a small change: one 16-px token
    result = flux_pipe.edit(source, mask=new, source_mask=labels, num_inference_steps=3)
    region = result.region
    assert region.shape == (64, 64) and (region[17:31, 17:31] == 1).all() and (region[16:32, 16:32] > 0).all()
    outside = region == 0
    assert outside.mean() > 0.7
    np.testing.assert_array_equal(np.asarray(result.images[0])[outside], np.asarray(source)[outside])
    with pytest.raises(EditError, match="--source-mask"):
        flux_pipe.edit(source, mask=new)  # no parser for real photos given


def test_edit_at_the_paper_configuration_512_bf16_weights_without_autocast(flux_folder):
    from facemogle.edit import sub_grid
    from facemogle.flow import time_grid, time_shift
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.from_flux(flux_folder, dtype=torch.bfloat16)
    labels = face_like_labels(512)
    source = pipe(mask=labels, num_inference_steps=2, autocast=False, watermark=False)[0]
    rows = _count_rows(pipe.model.transformer)
    result = pipe.edit(source, prompt="she has blond hair", operation="attribute", region="hair",
                       source_mask=labels, autocast=False, watermark=False)  # fmt: skip
    assert result.images[0].size == (512, 512) and result.method == "flowedit"
    steps = len(sub_grid(time_grid(28, time_shift(32 * 32)), 0.85)) - 1  # the default 28 steps below t = 0.85
    assert 20 < steps < 28 and rows == [1] * (2 * steps)  # FlowEdit: a target and a source row per step
    outside = result.region == 0
    np.testing.assert_array_equal(np.asarray(result.images[0])[outside], np.asarray(source)[outside])
    # by default full-scale outputs carry the watermark, an edit's after its paste-back
    assert not read(source).marked and not read(result.images[0]).marked
    marked = pipe.edit(source, prompt="she has blond hair", operation="attribute", region="hair",
                       source_mask=labels, autocast=False, num_inference_steps=2).images[0]  # fmt: skip
    assert read(marked).marked
    # lipstick is painted on at full scale too: the lips' own pixels and 1 px around them, not 16-px tokens
    from facemogle.labels import CLASSES

    lips = np.isin(labels, [CLASSES.index("upper lip"), CLASSES.index("lower lip")])
    lipstick = pipe.edit(source, prompt="add red lipstick", operation="attribute", source_mask=labels,
                         autocast=False, watermark=False, num_inference_steps=2)  # fmt: skip
    near = torch.nn.functional.max_pool2d(torch.from_numpy(lips).float()[None, None], 3, 1, 1)[0, 0].numpy() > 0
    assert lips.any() and np.array_equal(lipstick.region > 0, near)
    np.testing.assert_array_equal(np.asarray(lipstick.images[0])[~near], np.asarray(source)[~near])
