"""`facemogle eval`: generate for held-out items, score every available metric, write report.json, report.md and a grid.

Modes: mask (mask only, empty prompt), text (prompt only), both. The prompt of an item is its first
caption, as in the paper's protocol. Scores, each with its reference:
- mask consistency: the SynthFace parser's map of the generated face vs the input mask (mIoU, pixel
  accuracy), beside the parser on the real faces (the ceiling);
- text consistency: the attribute classifier on the generated face vs the attributes the prompt
  states, beside the classifier on the real faces for the same prompts (the ceiling);
- realism: Fréchet distance and KID on the classifier's pooled features, generated vs real test faces,
  beside real train faces vs real test faces (the floor). N is always reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.synthface import parse_caption
from ..images import image_grid, images_to_tensor
from ..labels import colorize, resize_labels
from .attributes import attribute_accuracy
from .fid import frechet_distance, kernel_distance
from .mask import mask_scores

MODES = ("mask", "text", "both")


@dataclass
class EvalItem:
    stem: str
    labels: np.ndarray  # [R, R] uint8
    prompt: str
    real: Image.Image


def load_items(data: str | os.PathLike, split: str, n: int, resolution: int) -> list[EvalItem]:
    """The first n items of a split (sorted by stem), with their first caption."""
    from ..data.folders import FaceMaskTextDataset

    dataset = FaceMaskTextDataset(data, split=split, resolution=resolution, caption="first")
    items = []
    for i in range(min(n, len(dataset))):
        item = dataset[i]
        real = Image.fromarray(
            ((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        )
        items.append(EvalItem(item["stem"], item["labels"].numpy().astype(np.uint8), item["caption"], real))
    return items


def generate(pipe, items: list[EvalItem], mode: str, out: Path, steps: int, seed: int) -> list[Image.Image]:
    """Generate (or reuse, when already on disk) one image per item; returns them in item order."""
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for k, item in enumerate(tqdm(items, desc=f"generating ({mode})", unit="image")):
        path = out / f"{item.stem}.png"
        if not path.exists():
            prompt = item.prompt if mode != "mask" else None
            mask = item.labels if mode != "text" else None
            image = pipe(prompt=prompt, mask=mask, num_inference_steps=steps, seed=seed + k)[0]
            image.save(path)
        images.append(Image.open(path).convert("RGB"))
    return images


def score(
    images: list[Image.Image], items: list[EvalItem], mode: str, parser, classifier, reference: dict
) -> dict:
    """Every metric that applies to a mode, for generated images in item order."""
    resolution = classifier.config.resolution
    batch = images_to_tensor(images, resolution)
    result: dict = {"n": len(images)}
    if mode in ("mask", "both"):
        predicted = torch.cat([parser.parse(chunk) for chunk in batch.split(64)]).numpy()
        result["mask"] = mask_scores(
            predicted, np.stack([resize_labels(i.labels, resolution) for i in items])
        )
    if mode in ("text", "both"):
        predictions = [p for chunk in batch.split(64) for p in classifier.predict(chunk)]
        result["text"] = attribute_accuracy(predictions, [parse_caption(i.prompt) for i in items])
    features = _features(classifier, batch)
    result["frechet"] = frechet_distance(features, reference["test_features"])
    result["kid"] = kernel_distance(
        features, reference["test_features"], subset_size=min(1000, len(features))
    )[0]
    return result


def reference_scores(items: list[EvalItem], train_items: list[EvalItem], parser, classifier) -> dict:
    """Real-image ceilings (parser, classifier) and the real-vs-real Fréchet floor."""
    resolution = classifier.config.resolution
    real = images_to_tensor([i.real for i in items], resolution)
    predicted = torch.cat([parser.parse(chunk) for chunk in real.split(64)]).numpy()
    predictions = [p for chunk in real.split(64) for p in classifier.predict(chunk)]
    test_features = _features(classifier, real)
    train_features = _features(classifier, images_to_tensor([i.real for i in train_items], resolution))
    return {
        "test_features": test_features,
        "mask": mask_scores(predicted, np.stack([resize_labels(i.labels, resolution) for i in items])),
        "text": attribute_accuracy(predictions, [parse_caption(i.prompt) for i in items]),
        "frechet": frechet_distance(train_features, test_features),
        "kid": kernel_distance(train_features, test_features, subset_size=min(1000, len(items)))[0],
    }


def _features(classifier, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([classifier.features(chunk) for chunk in images.split(64)]).double().numpy()


def evaluate(
    data: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    modes: tuple[str, ...] = MODES,
    split: str = "test",
    n: int = 500,
    steps: int = 20,
    seed: int = 0,
    evaluators: str | os.PathLike | None = None,
) -> dict:
    """Generate with `model` (or read `images`, named {stem}.png) and write report.json, report.md, grid.png."""
    from ..evaluators import load_evaluator
    from ..pipeline import FaceMoGLEPipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(evaluators) if evaluators else None
    parser = load_evaluator("parser", folder / "parser" if folder else None)
    classifier = load_evaluator("classifier", folder / "classifier" if folder else None)
    pipe = FaceMoGLEPipeline.from_pretrained(model) if images is None else None
    resolution = pipe.config.resolution if pipe else parser.config.resolution
    items = load_items(data, split, n, resolution)
    train_items = load_items(data, "train", len(items), resolution)
    reference = reference_scores(items, train_items, parser, classifier)
    report = {"data": str(data), "split": split, "n": len(items), "steps": steps, "seed": seed,
              "model": (str(model) if model else "the shipped default model") if pipe else None, "images": str(images) if images else None,
              "reference": {k: v for k, v in reference.items() if k != "test_features"}, "modes": {}}  # fmt: skip
    generated = {}
    for mode in modes:
        if pipe is not None:
            generated[mode] = generate(pipe, items, mode, out / mode, steps, seed)
        else:
            generated[mode] = [Image.open(_find_image(Path(images), i.stem)).convert("RGB") for i in items]
        report["modes"][mode] = score(generated[mode], items, mode, parser, classifier, reference)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    sample_sheet(items[:8], generated).save(out / "grid.png")
    return report


def _find_image(folder: Path, stem: str) -> Path:
    for ext in (".png", ".jpg", ".jpeg", ".webp"):
        if (folder / f"{stem}{ext}").exists():
            return folder / f"{stem}{ext}"
    raise FileNotFoundError(f"{folder} has no image for item {stem} ({stem}.png expected).")


def sample_sheet(items: list[EvalItem], generated: dict[str, list[Image.Image]]) -> Image.Image:
    """Rows: mask | generated image per mode | real image."""
    rows = []
    for k, item in enumerate(items):
        rows.append([colorize(item.labels)] + [generated[m][k] for m in generated] + [item.real])
    return image_grid(rows)


def markdown(report: dict) -> str:
    """A table like the paper's, plus the references each number should be read against."""
    ref = report["reference"]
    lines = [
        f"# Evaluation: {report['model'] or report['images']}",
        "",
        f"Data: {report['data']} ({report['split']} split), N = {report['n']} per mode, {report['steps']} sampling steps, "
        f"seed {report['seed']}. Evaluators: the SynthFace parser and attribute classifier.",
        "",
        "| mode | mask mIoU ↑ | pixel acc ↑ | attribute acc ↑ | Fréchet (classifier features) ↓ | KID ↓ |",
        "|---|---|---|---|---|---|",
    ]
    for mode, result in report["modes"].items():
        mask, text = result.get("mask"), result.get("text")
        lines.append(
            f"| {mode} | {_fmt(mask and mask['miou'])} | {_fmt(mask and mask['pixel_accuracy'])} | "
            f"{_fmt(text and text['accuracy'])} | {result['frechet']:.3f} | {result['kid']:.4f} |"
        )
    lines.append(
        f"| real faces (reference) | {_fmt(ref['mask']['miou'])} | {_fmt(ref['mask']['pixel_accuracy'])} | "
        f"{_fmt(ref['text']['accuracy'])} | {ref['frechet']:.3f} (train vs test) | {ref['kid']:.4f} |"
    )
    lines += ["", "Per-class IoU of the parser on generated faces (mask mode) and on real faces:", "",
              "| class | generated | real |", "|---|---|---|"]  # fmt: skip
    generated_iou = (
        report["modes"].get("mask", report["modes"].get("both", {})).get("mask", {}).get("per_class_iou", {})
    )
    for name, value in ref["mask"]["per_class_iou"].items():
        lines.append(f"| {name} | {_fmt(generated_iou.get(name))} | {_fmt(value)} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"
