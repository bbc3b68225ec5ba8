"""Offline evaluators for SynthFace: train them (`facemogle train-evaluators`), save, load the shipped ones."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io import atomic_write, read_json, write_json
from ..labels import LEFT_RIGHT_SWAP
from ..precision import bf16_is_fast
from .networks import (
    BINARY,
    CATEGORICAL,
    NETWORKS,
    AttributeClassifier,
    EvaluatorConfig,
    FaceParser,
    attribute_targets,
)

__all__ = [
    "AttributeClassifier",
    "FaceParser",
    "load_evaluator",
    "load_evaluators",
    "train_evaluator",
    "default_evaluator_folder",
]


class EvaluatorError(ValueError):
    """An evaluator folder that cannot be loaded; the message says how to get one."""


def default_evaluator_folder(kind: str) -> Path:
    return Path(str(resources.files("facemogle") / "assets" / "evaluators" / kind))


def load_evaluator(kind: str, folder: str | os.PathLike | None = None):
    """Load a trained parser or classifier (default: the ones shipped with facemogle)."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else default_evaluator_folder(kind)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise EvaluatorError(
            f"No {kind} evaluator in {folder} (config.json + model.safetensors); train one with "
            f"`facemogle train-evaluators --data DIR --out FOLDER` and pass --evaluators FOLDER."
        )
    config = EvaluatorConfig(**read_json(folder / "config.json"))
    if config.kind != kind:
        raise EvaluatorError(f"{folder} holds a {config.kind}, not a {kind}.")
    network = NETWORKS[kind](config)
    network.load_state_dict(load_file(folder / "model.safetensors"))
    return network.eval()


def load_evaluators(folder: str | os.PathLike | None = None) -> tuple[FaceParser, AttributeClassifier]:
    """The parser and the classifier from folder/parser and folder/classifier (default: the shipped ones)."""
    folder = Path(folder) if folder else None
    parser = load_evaluator("parser", folder / "parser" if folder else None)
    classifier = load_evaluator("classifier", folder / "classifier" if folder else None)
    return parser, classifier


def save_evaluator(network, folder: Path, metrics: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, p))
    write_json(folder / "config.json", network.config.to_dict())
    write_json(folder / "metrics.json", metrics)


def load_split(root: str | os.PathLike, split: str, resolution: int, limit: int | None = None):
    """A whole split in memory: images [N, 3, R, R] in [-1, 1], labels [N, R, R], attribute targets, stems."""
    from ..data.folders import FaceMaskTextDataset

    dataset = FaceMaskTextDataset(root, split=split, resolution=resolution, caption="first", validate=False)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    attributes = read_json(Path(root) / "attributes.json")
    images, labels, targets, stems = [], [], [], []
    for i in tqdm(range(count), desc=f"loading {split}", unit="item", disable=count < 2000):
        item = dataset[i]
        images.append(item["image"])
        labels.append(item["labels"])
        stems.append(item["stem"])
        name = next(n for n in (f"{item['stem']}.jpg", f"{item['stem']}.png") if n in attributes)
        targets.append(attribute_targets(attributes[name]))
    target_tensors = {k: torch.tensor([t[k] for t in targets]) for k in targets[0]}
    return torch.stack(images), torch.stack(labels), target_tensors, stems


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """Flips (left/right labels swapped), blur, noise and colour jitter, so that evaluators also read generated faces."""
    b = images.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    swapped = torch.as_tensor(LEFT_RIGHT_SWAP)[labels.flip(-1)]
    labels = torch.where(flip[:, None, None], swapped, labels)
    blur = F.avg_pool2d(images, 3, 1, 1, count_include_pad=False)
    amount = torch.rand(b, 1, 1, 1, generator=generator) * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    images = images + amount * (blur - images)
    gain = 1 + 0.2 * (torch.rand(b, 3, 1, 1, generator=generator) - 0.5)
    images = images * gain + 0.1 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    images = images + 0.04 * torch.rand(b, 1, 1, 1, generator=generator) * torch.randn(
        images.shape, generator=generator
    )
    return images.clamp(-1, 1), labels


def _loss(kind: str, network, images, labels, targets) -> torch.Tensor:
    if kind == "parser":
        return F.cross_entropy(network(images), labels)
    logits = network(images)
    loss = sum(F.cross_entropy(logits[name], targets[name]) for name in CATEGORICAL)
    binary = torch.stack([targets[name] for name in BINARY], dim=1).float()
    return loss + F.binary_cross_entropy_with_logits(logits["binary"], binary) * len(BINARY) / 4


def train_evaluator(
    kind: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    resolution: int = 64,
    seed: int = 0,
    limit: int | None = None,
    splits: tuple | None = None,
) -> dict:
    """Train a parser or classifier on the train split, score it on the test split, save it with its metrics."""
    from ..metrics.attributes import attribute_accuracy
    from ..metrics.mask import mask_scores

    torch.manual_seed(seed)
    train_images, train_labels, train_targets, _ = (
        splits[0] if splits else load_split(data, "train", resolution, limit)
    )
    test_images, test_labels, test_targets, _ = (
        splits[1] if splits else load_split(data, "test", resolution, limit)
    )
    network = NETWORKS[kind](EvaluatorConfig(kind, resolution))
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc=f"training {kind}", unit="step"):
        index = torch.randint(len(train_images), (batch_size,), generator=generator)
        images, labels = augment(train_images[index], train_labels[index], generator)
        targets = {k: v[index] for k, v in train_targets.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_is_fast("cpu")):
            loss = _loss(kind, network, images, labels, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    network.eval()
    if kind == "parser":
        predicted = torch.cat([network.parse(chunk) for chunk in test_images.split(64)])
        metrics = mask_scores(predicted.numpy(), test_labels.numpy())
    else:
        predictions = [p for chunk in test_images.split(64) for p in network.predict(chunk)]
        truth = [_target_values(test_targets, i) for i in range(len(test_images))]
        metrics = attribute_accuracy(predictions, truth)
    metrics.update(
        kind=kind, steps=steps, seed=seed, train_items=len(train_images), test_items=len(test_images)
    )
    save_evaluator(network, Path(out), metrics)
    return metrics


def _target_values(targets: dict, i: int) -> dict:
    """Attribute values (as SynthFace states them) from head indices: every attribute counts as stated."""
    values = {}
    for name, classes in CATEGORICAL.items():
        value = classes[int(targets[name][i])]
        values[name] = None if value == "none" else value
    for name in BINARY:
        values[name] = bool(targets[name][i])
    return values
