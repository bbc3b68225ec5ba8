import json
import warnings

import numpy as np
import pytest
import torch
import torch._inductor.config
from conftest import face_like_labels

from facemogle.errors import FaceMoGLEError
from facemogle.labels import MaskError
from facemogle.pipeline import TRAINING_FILE, CheckpointError, FaceMoGLEPipeline, model_fingerprint
from facemogle.text import MiniLMTextEncoder


def pixels(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


@pytest.mark.parametrize("mode", ["mask", "text", "both"])
def test_all_three_modes(tiny_pipe, mode):
    prompt = "She has wavy blond hair." if mode != "mask" else None
    mask = face_like_labels(32) if mode != "text" else None
    images = tiny_pipe(prompt=prompt, mask=mask, num_inference_steps=3, num_images=2, seed=1)
    assert len(images) == 2 and images[0].size == (32, 32) and images[0].mode == "RGB"


def test_determinism_by_seed(tiny_pipe):
    kwargs = dict(prompt="a man with a beard", mask=face_like_labels(32), num_inference_steps=3)
    a = pixels(tiny_pipe(**kwargs, seed=3))
    b = pixels(tiny_pipe(**kwargs, seed=3))
    c = pixels(tiny_pipe(**kwargs, seed=4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_compile_traces_the_transformer_as_it_samples(fresh_dynamo):
    """pipe.compile() hands its options to torch.compile and sampling then runs the traced transformer (a
    recording backend here: the graphs it is given, each run as traced; no C++ compiler needed)."""
    pipe = FaceMoGLEPipeline.init("tiny", seed=0)
    kwargs = dict(prompt="a man with a beard", mask=face_like_labels(32), num_inference_steps=2, seed=3)
    eager = pixels(pipe(**kwargs))
    graphs = []

    def recording(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    pipe.compile(backend=recording)
    np.testing.assert_array_equal(pixels(pipe(**kwargs)), eager)
    assert graphs and any(node.op == "call_function" for graph in graphs for node in graph.graph.nodes)


def test_compile_without_a_cpp_compiler_says_what_to_do(monkeypatch, fresh_dynamo):
    """inductor's own compiler search (CXX, else g++) decides; another backend needs no compiler."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "/nonexistent/g++"))
    pipe = FaceMoGLEPipeline.init("tiny", seed=0)
    with pytest.raises(FaceMoGLEError, match=r"no C\+\+ compiler.*leave out --compile"):
        pipe.compile()
    pipe.compile(backend="eager")
    pipe(mask=face_like_labels(32), num_inference_steps=1)
    assert fresh_dynamo["stats"]["unique_graphs"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("autocast, atol", [(False, 1e-4), (True, 0.03)])
def test_the_compiled_transformer_samples_what_the_eager_one_does(fresh_dynamo, autocast, atol):
    """torch.compile's own CPU kernels (inductor, C++), as `--compile` runs them, in float32 and bfloat16."""
    pipe = FaceMoGLEPipeline.init("tiny", seed=0)
    kwargs = dict(prompt="a man with a beard", mask=face_like_labels(32), num_inference_steps=3, num_images=2,
                  seed=3, output_type="np", autocast=autocast)  # fmt: skip
    eager = pipe(**kwargs)
    pipe.compile()
    compiled = pipe(**kwargs)
    assert fresh_dynamo["stats"]["unique_graphs"] > 0
    np.testing.assert_allclose(compiled, eager, atol=atol)


def _spy_forward(model, calls):
    """Record (rows, with the mask stream) of every denoiser forward."""
    original = model.forward

    def spy(noisy, t, text, condition=None, *args, **kwargs):
        calls.append((noisy.shape[0], condition is not None))
        return original(noisy, t, text, condition, *args, **kwargs)

    model.forward = spy


def test_guidance_of_one_equals_plain_conditional_prediction(tiny_pipe):
    labels = face_like_labels(32)
    calls = []
    model = tiny_pipe.model
    _spy_forward(model, calls)
    try:
        tiny_pipe(prompt="a woman", mask=labels, num_inference_steps=2, text_guidance=1.0, mask_guidance=1.0)
        assert calls == [(1, True)] * 2  # one branch only
        calls.clear()
        tiny_pipe(prompt="a woman", mask=labels, num_inference_steps=2, text_guidance=2.0, mask_guidance=2.0)
        # per step: (text, mask) and (∅, mask) in one forward, (∅, ∅) without condition tokens
        assert calls == [(2, True), (1, False)] * 2
    finally:
        del model.forward
    # with scales 1 the guided velocity is the conditional one
    texts = tiny_pipe.text_encoder.encode(["a woman"])
    cond = model.encode_condition(torch.as_tensor(labels)[None])
    x, t = torch.randn(1, 64, 48), torch.tensor([0.7])
    velocity = tiny_pipe.velocity("a woman", labels, 1.0, 1.0, 1, (8, 8))
    torch.testing.assert_close(velocity(x, t), model(x, t, texts, cond), atol=1e-5, rtol=1e-5)


def test_branches_without_the_mask_skip_its_tokens_with_the_same_velocity(tiny_pipe):
    """The no-mask branch used to carry the condition tokens, hidden by the attention bias: dropping them
    changes nothing but the work (2 images, all three branches)."""
    from facemogle.flow import combine_guidance

    model, labels = tiny_pipe.model, face_like_labels(32)
    texts = tiny_pipe.text_encoder.encode(["a woman", "", ""])
    branches = [(True, True), (False, True), (False, False)]
    x, t = torch.randn(2, 64, 48), torch.tensor([0.6, 0.6])
    hidden = model(
        x.repeat(3, 1, 1), t.repeat(3), _rows_per_branch(texts, 2),
        model.encode_condition(torch.as_tensor(labels)[None]).repeat(6),
        torch.tensor([True, True, True, True, False, False]),
    )  # fmt: skip
    expected = combine_guidance(dict(zip(branches, hidden.float().chunk(3))), True, True, 3.0, 2.0)
    torch.testing.assert_close(tiny_pipe.velocity("a woman", labels, 3.0, 2.0, 2, (8, 8))(x, t), expected,
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def _rows_per_branch(texts, n):
    from facemogle.text import TextEmbedding

    return TextEmbedding.cat([TextEmbedding(texts.tokens[i : i + 1], texts.mask[i : i + 1],
                                            texts.pooled[i : i + 1]).repeat(n) for i in range(len(texts.tokens))])  # fmt: skip


def test_guidance_applies_only_inside_its_interval(tiny_pipe):
    from facemogle.flow import SamplingDefaults

    model, labels = tiny_pipe.model, face_like_labels(32)
    sampling = SamplingDefaults(text_interval=(0.5, 1.0), mask_interval=(0.0, 0.5))
    velocity = tiny_pipe.velocity("a woman", labels, 3.0, 2.0, 1, (8, 8), sampling=sampling)
    x = torch.randn(1, 64, 48)
    calls = []
    _spy_forward(model, calls)
    try:
        early = velocity(x, torch.tensor([0.7]))  # text guidance only
        assert calls == [(2, True)]
        calls.clear()
        late = velocity(x, torch.tensor([0.3]))  # mask guidance only
        assert calls == [(2, True), (1, False)]
    finally:
        del model.forward
    everywhere = tiny_pipe.velocity("a woman", labels, 3.0, 1.0, 1, (8, 8))
    torch.testing.assert_close(early, everywhere(x, torch.tensor([0.7])))
    everywhere = tiny_pipe.velocity("a woman", labels, 1.0, 2.0, 1, (8, 8))
    torch.testing.assert_close(late, everywhere(x, torch.tensor([0.3])))
    # a model's intervals come from its config and are checked there
    with pytest.raises(ValueError, match="0 ≤ lo ≤ hi ≤ 1"):
        SamplingDefaults(text_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="two times"):
        SamplingDefaults(mask_interval=0.5)
    assert SamplingDefaults(text_interval=[0.1, 0.9]).text_interval == (0.1, 0.9)


def test_save_load_round_trip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    loaded = FaceMoGLEPipeline.from_pretrained(tmp_path / "model")
    kwargs = dict(prompt="a smiling man", mask=face_like_labels(32), num_inference_steps=3, seed=5)
    np.testing.assert_array_equal(pixels(loaded(**kwargs)), pixels(tiny_pipe(**kwargs)))
    assert not list((tmp_path / "model").glob("*.tmp"))


def test_the_fingerprint_follows_the_weights_not_where_they_came_from(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "a")
    tiny_pipe.save_pretrained(tmp_path / "b")
    (tmp_path / "a" / TRAINING_FILE).write_text('{"step": 100, "train_config": {"out": "runs/one"}}')
    (tmp_path / "b" / TRAINING_FILE).write_text('{"step": 100, "train_config": {"out": "runs/two"}}')
    assert model_fingerprint(tmp_path / "a") == model_fingerprint(tmp_path / "b")
    FaceMoGLEPipeline.init("tiny", seed=1).save_pretrained(tmp_path / "c")
    (tmp_path / "c" / TRAINING_FILE).write_text('{"step": 100, "train_config": {"out": "runs/one"}}')
    assert model_fingerprint(tmp_path / "c") != model_fingerprint(tmp_path / "a")


def test_bad_model_folders(tiny_pipe, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        FaceMoGLEPipeline.from_pretrained(tmp_path / "missing")
    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        FaceMoGLEPipeline.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(weights)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_heads": 4}))
    with pytest.raises(CheckpointError, match="does not match"):
        FaceMoGLEPipeline.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        FaceMoGLEPipeline.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        FaceMoGLEPipeline.from_pretrained(folder)


def test_bad_inputs(tiny_pipe, mask_file):
    with pytest.raises(ValueError, match="Give a mask, a prompt, or both"):
        tiny_pipe(prompt="   ")
    with pytest.raises(ValueError, match="characters"):
        tiny_pipe(prompt="x" * 5000)
    with pytest.raises(TypeError, match="prompt must be a string"):
        tiny_pipe(prompt=42)
    with pytest.raises(ValueError, match="≥ 1"):
        tiny_pipe(prompt="a", num_inference_steps=0)
    with pytest.raises(ValueError, match="multiples of 4 pixels"):
        tiny_pipe(prompt="a", height=30)
    with pytest.raises(MaskError, match="fit='crop'"):
        tiny_pipe(mask=np.ones((20, 30), np.uint8), num_inference_steps=1)
    assert tiny_pipe(mask=np.ones((20, 30), np.uint8), num_inference_steps=1, fit="pad")[0].size == (32, 32)
    with pytest.warns(UserWarning, match="resized"):
        tiny_pipe(mask=mask_file, num_inference_steps=1)


def test_long_prompt_is_truncated_with_warning():
    encoder = MiniLMTextEncoder(max_tokens=8)
    with pytest.warns(UserWarning, match="truncated"):
        emb = encoder.encode(["one two three four five six seven eight nine ten eleven"])
    assert emb.tokens.shape == (1, 8, 384) and emb.mask.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = encoder.encode(["hi", ""])
    assert short.mask[0].sum() == 3 and short.mask[1].sum() == 2


def test_optimisation_lowers_loss(tiny_pipe):
    from facemogle.model import FaceMoGLEModel, StepRandomness

    torch.manual_seed(0)
    model = FaceMoGLEModel(tiny_pipe.config)
    labels = torch.as_tensor(np.stack([face_like_labels(32), face_like_labels(32)[:, ::-1].copy()]))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    text = tiny_pipe.text_encoder.encode(["a woman", "a man"])
    null = tiny_pipe.text_encoder.encode([""])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_at(seed):
        return model.loss(images, labels, text, null, StepRandomness.draw(seed, 0, 2, model.token_shape(32)))

    with torch.no_grad():
        before = sum(loss_at(s).item() for s in range(8))
    for step in range(60):
        optimizer.zero_grad()
        loss_at(100 + step).backward()
        optimizer.step()
    with torch.no_grad():
        after = sum(loss_at(s).item() for s in range(8))
    assert after < 0.7 * before


def test_x_prediction_turns_the_clean_image_into_a_velocity():
    """prediction="x": the transformer's output is x̂0 and the model returns (x_t − x̂0) / max(t, 0.05), so
    the sampler and the velocity loss see a velocity; the choice is saved with the model."""
    from facemogle.model import MIN_X_TIME, FaceMoGLEConfig, FaceMoGLEModel, config_for_size

    torch.manual_seed(0)
    model = FaceMoGLEModel(config_for_size("tiny", prediction="x"))
    text = FaceMoGLEPipeline.init("tiny").text_encoder.encode(["a woman", "a man"])
    x, t = torch.randn(2, 64, 48), torch.tensor([0.5, 0.01])
    condition = model.encode_condition(torch.as_tensor(np.stack([face_like_labels(32)] * 2)))
    raw = FaceMoGLEModel(config_for_size("tiny"))  # the same weights, their output taken as it is
    raw.load_state_dict(model.state_dict())
    clean = raw(x, t, text, condition)
    expected = (x - clean) / torch.tensor([0.5, MIN_X_TIME]).view(2, 1, 1)
    torch.testing.assert_close(model(x, t, text, condition), expected)
    assert FaceMoGLEConfig.from_dict(model.config.to_dict()).prediction == "x"
    with pytest.raises(ValueError, match="prediction must be one of"):
        config_for_size("tiny", prediction="eps")
    pipe = FaceMoGLEPipeline(model, FaceMoGLEPipeline.init("tiny").text_encoder)
    assert pipe(mask=face_like_labels(32), num_inference_steps=2)[0].size == (32, 32)


def test_the_pixel_head_starts_as_the_identity_and_learns_across_patch_boundaries():
    from facemogle.model import FaceMoGLEConfig, FaceMoGLEModel, config_for_size

    torch.manual_seed(0)
    model = FaceMoGLEModel(config_for_size("tiny", pixel_head=8))
    plain = FaceMoGLEModel(config_for_size("tiny"))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("pixel_head.")})
    text = FaceMoGLEPipeline.init("tiny").text_encoder.encode(["a woman"])
    x, t = torch.randn(1, 64, 48), torch.tensor([0.5])
    torch.testing.assert_close(model(x, t, text), plain(x, t, text))  # zero-initialised: no change
    with torch.no_grad():
        model.pixel_head.outer.weight.normal_()
    pixels = model.decode(model(x, t, text) - plain(x, t, text), 32, 32)[0].abs().sum(0)  # [32, 32]
    assert pixels[:, 3:5].sum() > 0 and pixels[3:5, :].sum() > 0  # it reaches across the first boundary
    assert FaceMoGLEConfig.from_dict(model.config.to_dict()).pixel_head == 8
    pipe = FaceMoGLEPipeline(model, FaceMoGLEPipeline.init("tiny").text_encoder)
    wide = pipe(prompt="a woman", height=32, width=64, num_inference_steps=1, output_type="np")
    assert wide.shape == (1, 32, 64, 3)  # the head works on the grid of the size asked for


@pytest.mark.parametrize("resolution", [64, 128])
def test_other_resolutions(resolution):
    pipe = FaceMoGLEPipeline.init("tiny", resolution=resolution)
    images = pipe(prompt="a woman", mask=face_like_labels(resolution), num_inference_steps=2)
    assert images[0].size == (resolution, resolution)


def test_mask_is_encoded_once_per_call(tiny_pipe):
    calls = []
    original = tiny_pipe.model.encode_condition

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    tiny_pipe.model.encode_condition = counting
    try:
        tiny_pipe(prompt="a woman", mask=face_like_labels(32), num_inference_steps=5, num_images=2)
    finally:
        del tiny_pipe.model.encode_condition
    assert len(calls) == 1


def test_text_cache_overflow_keeps_the_current_batch(monkeypatch):
    import facemogle.text as text

    monkeypatch.setattr(text, "CACHE_SIZE", 3)
    encoder = MiniLMTextEncoder(max_tokens=8)
    prompts = [f"prompt number {i}" for i in range(5)]
    first = encoder.encode(prompts)
    again = encoder.encode(prompts[::-1] + ["one more"])
    assert first.tokens.shape[0] == 5 and again.tokens.shape[0] == 6
    torch.testing.assert_close(again.tokens[4], first.tokens[0])


def test_unconditional_samples_only_when_asked(tiny_pipe):
    with pytest.raises(ValueError, match="nothing to generate"):
        tiny_pipe(prompt="  ", num_inference_steps=2)
    images = tiny_pipe(num_inference_steps=2, num_images=2, unconditional=True)
    assert len(images) == 2 and images[0].size == (32, 32)
    assert images[0].tobytes() != images[1].tobytes()


def test_the_ablation_with_neither_experts_nor_gate_samples():
    from facemogle.mogle import MoGLEConfig

    pipe = FaceMoGLEPipeline.init("tiny", mogle=MoGLEConfig(hidden_dim=16, experts=False, gating="none"))
    assert not list(pipe.model.mogle.parameters())
    image = pipe(mask=face_like_labels(32), num_inference_steps=2)[0]
    assert image.size == (32, 32)


def test_diffusers_conventions_generator_callback_and_output_types(tiny_pipe):
    kwargs = dict(prompt="she is smiling", mask=face_like_labels(32), num_inference_steps=3)
    by_seed = tiny_pipe(**kwargs, seed=5, output_type="pt")
    by_generator = tiny_pipe(**kwargs, generator=torch.Generator().manual_seed(5), output_type="pt")
    torch.testing.assert_close(by_generator, by_seed)
    assert by_seed.shape == (1, 3, 32, 32) and 0 <= by_seed.min() and by_seed.max() <= 1
    array = tiny_pipe(**kwargs, seed=5, output_type="np")
    np.testing.assert_allclose(array, by_seed.permute(0, 2, 3, 1).numpy())
    pil = tiny_pipe(**kwargs, seed=5)[0]
    np.testing.assert_allclose(np.asarray(pil) / 255, array[0], atol=1 / 255 + 1e-6)
    seen = []

    def callback(pipe, step, t, tensors):
        seen.append((step, float(t), tensors["latents"].shape))
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 2 else {}

    zeroed = tiny_pipe(**kwargs, seed=5, output_type="pt", callback_on_step_end=callback)
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][1] == 1.0 and seen[0][2] == (1, 64, 48)
    torch.testing.assert_close(zeroed, torch.full_like(zeroed, 0.5))  # x = 0 decodes to mid-grey
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipe(**kwargs, output_type="latent")


def test_sampling_defaults_come_from_the_model_config(tiny_pipe, tmp_path):
    from facemogle.flow import SamplingDefaults

    assert tiny_pipe.config.sampling == SamplingDefaults()
    tiny_pipe.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["sampling"].update(steps=3, text_guidance=1.0, mask_guidance=1.0)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    pipe = FaceMoGLEPipeline.from_pretrained(tmp_path / "m")
    rows = []
    pipe.model.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    pipe(prompt="she is smiling", mask=face_like_labels(32))
    assert rows == [1, 1, 1]  # 3 steps, no guidance branch
    rows.clear()
    pipe(prompt="she is smiling", mask=face_like_labels(32), num_inference_steps=2, text_guidance=2.0)
    assert rows == [2, 2]


def test_compact_outputs_are_marked_when_asked_and_small_ones_say_they_are_not():
    from facemogle.model import FaceMoGLEModel, config_for_size
    from facemogle.watermark import read

    torch.manual_seed(0)
    pipe = FaceMoGLEPipeline(FaceMoGLEModel(config_for_size("tiny", resolution=128, patch_size=16)))
    kwargs = dict(mask=face_like_labels(128), num_inference_steps=2)
    plain = pipe(**kwargs)[0]  # the compact default: unmarked (the CLI and the demo mark what they save)
    marked = pipe(**kwargs, watermark=True)[0]
    assert not read(plain).marked and read(marked).marked
    as_array = pipe(**kwargs, watermark=True, output_type="np")[0]  # [H, W, 3] in [0, 1], 8-bit values
    np.testing.assert_array_equal(np.round(as_array * 255).astype(np.uint8), np.asarray(marked))
    wide = pipe(
        prompt="a woman", height=128, width=256, num_inference_steps=1, watermark=True, output_type="pt"
    )
    assert wide.shape == (1, 3, 128, 256)  # not squashed to a square
    with pytest.warns(UserWarning, match="left unmarked: the watermark needs 128"):
        small = FaceMoGLEPipeline.init("tiny")(
            mask=face_like_labels(32), num_inference_steps=1, watermark=True
        )
    assert small[0].size == (32, 32)
