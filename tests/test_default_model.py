"""The shipped default model: the README's first command works offline, and the model follows masks and prompts."""

import numpy as np
import pytest
from conftest import face_like_labels
from PIL import Image

from facemogle.cli import main
from facemogle.demo import example_masks
from facemogle.labels import load_mask, resize_labels, save_mask
from facemogle.pipeline import FaceMoGLEPipeline, default_model_folder

pytestmark = pytest.mark.skipif(
    not (default_model_folder() / "model.safetensors").is_file(),
    reason="no default model shipped in this checkout",
)


@pytest.fixture(scope="module")
def pipe():
    return FaceMoGLEPipeline.from_pretrained()


def test_readme_command_without_model(tmp_path):
    mask = next(p for p in example_masks() if p.name.startswith("synthface"))
    out = tmp_path / "face.png"
    assert main(["generate", "--mask", str(mask), "--prompt", "She has long blond hair.", "--out", str(out),
                 "--steps", "6", "--grid"]) == 0  # fmt: skip
    side = FaceMoGLEPipeline.from_pretrained().config.resolution
    assert Image.open(out).size == (side, side)
    assert Image.open(tmp_path / "face_grid.png").size[0] > 128


def test_hand_drawn_mask_at_another_size(tmp_path, pipe):
    """Zero-shot: a hand-made label map at 48×48, resized to the model's resolution, generates without error."""
    path = tmp_path / "drawn.png"
    save_mask(face_like_labels(48), path)
    with pytest.warns(UserWarning, match="resized"):
        images = pipe(mask=path, prompt="He is smiling.", num_inference_steps=6)
    assert images[0].size == (pipe.config.resolution,) * 2


def test_follows_the_mask(pipe):
    """The shipped parser reads the mask back from faces generated for held-out SynthFace masks."""
    import torch

    from facemogle.evaluators import load_evaluator
    from facemogle.images import images_to_tensor
    from facemogle.metrics.mask import mask_scores

    parser = load_evaluator("parser")
    masks = [load_mask(p) for p in example_masks() if p.name.startswith("synthface")]
    images = [pipe(mask=m, num_inference_steps=10, seed=k)[0] for k, m in enumerate(masks)]
    with torch.no_grad():
        parsed = parser.parse(images_to_tensor(images, parser.config.resolution)).numpy()
    scores = mask_scores(parsed, np.stack([resize_labels(m, parser.config.resolution) for m in masks]))
    assert scores["pixel_accuracy"] > 0.8 and scores["miou"] > 0.4, scores


def test_follows_a_drawn_mask(pipe):
    """Beyond SynthFace: the shipped hand-drawn example (block-shaped parts, no ears or brows) is followed
    in its layout — the parser finds background, skin, hair and cloth where the drawing put them."""
    import torch

    from facemogle.evaluators import load_evaluator
    from facemogle.images import images_to_tensor
    from facemogle.metrics.mask import mask_scores

    mask = load_mask(next(p for p in example_masks() if p.name == "drawn_face.png"))
    images = pipe(mask=mask, num_inference_steps=10, num_images=2, seed=0)
    with torch.no_grad():
        parser = load_evaluator("parser")
        parsed = parser.parse(images_to_tensor(images, parser.config.resolution)).numpy()
    scores = mask_scores(parsed, np.stack([resize_labels(mask, parser.config.resolution)] * 2))
    iou = scores["per_class_iou"]
    assert scores["pixel_accuracy"] > 0.8, scores
    assert min(iou["background"], iou["skin"], iou["hair"], iou["cloth"]) > 0.6, iou


def test_follows_the_prompt(pipe):
    """Text only: the attribute classifier sees the hair colour and the hat the prompt asks for."""
    from facemogle.evaluators import load_evaluator
    from facemogle.images import images_to_tensor

    classifier = load_evaluator("classifier")
    prompts = {"She has long black hair.": ("hair_color", "black"), "He has short blond hair.": ("hair_color", "blond"),
               "She is wearing a hat.": ("hat", True)}  # fmt: skip
    hits = 0
    for prompt, (name, value) in prompts.items():
        images = pipe(prompt=prompt, num_inference_steps=10, num_images=3, seed=1)
        predictions = classifier.predict(images_to_tensor(images, classifier.config.resolution))
        hits += sum(p[name] == value for p in predictions)
    assert hits >= 6, hits
