"""The paper's metrics (Inception FID/KID, CMMD, CLIP score, DINO structure distance, ImageReward) on tiny
randomly initialised networks saved like the real ones, and their "skipped: …" reporting."""

import json

import numpy as np
import pytest
import torch
from conftest import word_tokenizer
from PIL import Image

from facemogle.cli import main
from facemogle.data.synthface import write_synthface
from facemogle.metrics import MetricUnavailable
from facemogle.metrics.clip import clip_score, cmmd, load_clip
from facemogle.metrics.dino import load_dino
from facemogle.metrics.fid import clean_resize, frechet_distance, inception_features, load_inception
from facemogle.metrics.imagereward import image_reward, load_imagereward
from facemogle.metrics.report import PaperModels


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=32, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=77, eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    word_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(folder)  # fmt: skip
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


class TinyInception(torch.nn.Module):
    """The interface of clean-fid's TorchScript Inception: uint8-range float [B, 3, 299, 299] → features."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 7, stride=4)
        self.fc = torch.nn.Linear(16, 1008)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.shape[1:] == (3, 299, 299) and float(x.min()) >= 0.0 and float(x.max()) <= 255.0
        features = self.conv(x / 128 - 1).relu().mean(dim=(2, 3))
        return features if return_features else self.fc(features)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A tiny random network saved as TorchScript, like inception-2015-12-05.pt."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(TinyInception()), str(path))
    return path


def _faces(n, seed):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_clip_score_and_cmmd_known_cases():
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    assert clip_score(a, a) == pytest.approx(100)
    assert clip_score(a, -a) == 0  # negative cosine counts as 0
    assert cmmd(a, a) == pytest.approx(0, abs=1e-9)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    assert cmmd(x, x + 1) > cmmd(x, x + 0.1) > 0


def test_clip_embeds_images_and_truncates_long_prompts(clip_folder):
    clip = load_clip(clip_folder)
    faces = _faces(3, 0)
    images = clip.images(faces + faces[:1])
    assert images.shape == (4, 16) and torch.allclose(images.norm(dim=-1), torch.ones(4))
    assert torch.allclose(images[0], images[3])
    texts = clip.texts(["a woman has blond hair", "she is smiling " * 200])
    assert texts.shape == (2, 16)
    assert 0 <= clip_score(images[:2], texts) <= 100


def test_dino_structure_distance(dino_folder):
    dino = load_dino(dino_folder)
    faces = _faces(3, 1)
    similarity = dino.self_similarity(faces)
    tokens = 1 + (32 // 8) ** 2
    assert similarity.shape == (3, tokens, tokens)
    assert torch.allclose(similarity.diagonal(dim1=1, dim2=2), torch.ones(3, tokens), atol=1e-5)
    assert dino.distance(faces, faces) == pytest.approx(0, abs=1e-10)
    flipped = [f.transpose(Image.Transpose.FLIP_TOP_BOTTOM) for f in faces]
    assert dino.distance(faces, flipped) > 0


def test_inception_features_from_a_local_weights_file(inception_file):
    network = load_inception(inception_file)
    faces = _faces(4, 2)
    features = inception_features(network, faces, batch=3)
    assert features.shape == (4, 16) and features.dtype == np.float64
    assert np.allclose(features[:2], inception_features(network, faces[:2]))


def test_missing_or_wrong_models_are_skipped_with_the_fix(tmp_path):
    models, skipped = PaperModels().load()
    assert models == {}
    assert set(skipped) == {"inception", "clip", "cmmd_clip", "dino", "imagereward"}
    assert "--inception FILE" in skipped["inception"] and "inception-2015-12-05.pt" in skipped["inception"]
    assert "--clip FOLDER" in skipped["clip"] and "--dino FOLDER" in skipped["dino"]
    assert "ImageReward.pt" in skipped["imagereward"]
    corrupt = tmp_path / "inception.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailable, match="not a TorchScript Inception"):
        load_inception(corrupt)
    with pytest.raises(MetricUnavailable, match="is not a folder"):
        load_clip(tmp_path / "missing")
    with pytest.raises(MetricUnavailable, match="not a usable DINO folder"):
        load_dino(tmp_path)
    (tmp_path / "ImageReward.pt").write_bytes(b"")
    with pytest.raises(MetricUnavailable, match="med_config.json"):
        load_imagereward(tmp_path)


def test_image_reward_averages_per_prompt_scores():
    class Scorer:  # the ImageReward model's interface: score(prompt, image) → float
        def score(self, prompt, image):
            return len(prompt) + image.size[0]

    faces = _faces(2, 3)
    assert image_reward(Scorer(), faces, ["ab", "abcd"]) == pytest.approx((2 + 32 + 4 + 32) / 2)


def test_eval_reports_paper_metrics_and_skips(tmp_path, clip_folder, dino_folder, inception_file):
    """Scoring the real test faces themselves: FID ≈ 0 and DINO distance 0 against the real faces."""
    data = write_synthface(tmp_path / "sf", 40, size=32, progress=False)
    from facemogle.evaluators import train_evaluator

    for kind in ("parser", "classifier"):
        train_evaluator(kind, data, tmp_path / "ev" / kind, steps=2, batch_size=4, resolution=32)
    args = ["eval", "--images", str(data / "face"), "--data", str(data), "--n", "6", "--mode", "both",
            "--out", str(tmp_path / "out"), "--evaluators", str(tmp_path / "ev"), "--inception", str(inception_file),
            "--clip", str(clip_folder), "--dino", str(dino_folder)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    paper = report["modes"]["both"]["paper"]
    assert set(paper) == {"fid", "kid", "cmmd", "dino_structure", "clip_score"}
    assert paper["fid"] == pytest.approx(0, abs=1e-3) and paper["dino_structure"] == pytest.approx(
        0, abs=1e-8
    )
    assert paper["cmmd"] == pytest.approx(0, abs=1e-6)
    assert paper["clip_score"] == pytest.approx(report["reference"]["paper"]["clip_score"])
    assert set(report["skipped"]) == {"imagereward"}
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| FID ↓ |" in text and "imagereward: skipped: ImageReward needs" in text


def test_frechet_of_identical_sets_is_zero_with_any_extractor(inception_file):
    features = inception_features(load_inception(inception_file), _faces(12, 4))
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-3)


def test_clean_resize_matches_clean_fid_conventions():
    flat = clean_resize(Image.new("RGB", (64, 64), (10, 200, 255)))
    assert flat.shape == (299, 299, 3) and flat.dtype == np.float32
    assert np.allclose(flat, [10, 200, 255], atol=1e-3)
    edges = clean_resize(
        Image.fromarray(np.kron(np.eye(2), np.ones((16, 16)))[..., None].repeat(3, -1).astype(np.uint8) * 255)
    )
    assert edges.min() >= 0 and edges.max() <= 255  # bicubic overshoot is clipped, as clean-fid does
