"""`facemogle eval`: generate for held-out items, score every available metric, write report.json, report.md and a grid.

Modes: mask (mask only, empty prompt), text (prompt only), both, and none (unconditional samples, for a
realism baseline; not run unless asked). The prompt of an item is its first
caption, as in the paper's protocol. Scores, each with its reference:
- mask consistency: the SynthFace parser's map of the generated face vs the input mask (mIoU, pixel
  accuracy), beside the parser on the real faces (the ceiling);
- text consistency: the attribute classifier on the generated face vs the attributes the prompt
  states, beside the classifier on the real faces for the same prompts (the ceiling);
- realism: Fréchet distance and KID on the classifier's pooled features, generated vs real test faces,
  beside real train faces vs real test faces (the floor). N is always reported;
- a visible patch grid: the boundary-over-inside gradient ratio (`patch_grid`), worst over patch sizes
  2–16, on the images at the size they were made, beside the real faces'.
The paper's metrics (Inception FID/KID, CMMD, CLIP score, DINO structure distance, ImageReward) are
computed when their models are given as local files (`PaperModels`); otherwise the report says
"skipped: <what is needed, how to pass it>". CLIP score and ImageReward score every mode against the
item's caption (the paper does the same for mask-only generation).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.synthface import parse_caption
from ..images import image_grid, images_to_tensor
from ..io import atomic_write, read_json, run_share, write_json
from ..labels import colorize, resize_labels
from . import MetricUnavailable
from .attributes import attribute_accuracy, attribute_hits
from .clip import clip_score, cmmd, load_clip
from .dino import load_dino
from .fid import frechet_distance, inception_features, kernel_distance, load_inception
from .imagereward import image_reward, load_imagereward
from .mask import confusion_scores, image_confusions, mask_scores
from .patch_grid import patch_grid_score

MODES = ("mask", "text", "both")
# per-item counts beside report.json: "stems", "{mode}/confusion" [N, 19, 19], "{mode}/attributes" [N, 2]
PER_ITEM = "per_item.npz"


@dataclass
class EvalItem:
    stem: str
    labels: np.ndarray  # [R, R] uint8
    prompt: str
    real: Image.Image


@dataclass
class PaperModels:
    """Local model files for the paper's metrics; a missing one makes its metrics "skipped: …"."""

    inception: str | None = None  # clean-fid's TorchScript Inception-v3 (inception-2015-12-05.pt)
    clip: str | None = None  # CLIP folder for the CLIP score (and CMMD when cmmd_clip is not given)
    cmmd_clip: str | None = None  # CLIP folder for CMMD (the paper: ViT-L/14-336)
    dino: str | None = None  # DINO ViT folder (the paper: dino-vitb8)
    imagereward: str | None = None  # folder with ImageReward.pt and med_config.json

    def load(self) -> tuple[dict, dict[str, str]]:
        """(models by metric family, skip reasons by metric family)."""
        loaders = {
            "inception": lambda: load_inception(self.inception),
            "clip": lambda: load_clip(self.clip),
            "dino": lambda: load_dino(self.dino),
            "imagereward": lambda: load_imagereward(self.imagereward),
        }
        if self.cmmd_clip:
            loaders["cmmd_clip"] = lambda: load_clip(self.cmmd_clip, "--cmmd-clip")
        models, skipped = {}, {}
        for name, load in loaders.items():
            try:
                models[name] = load()
            except MetricUnavailable as reason:
                skipped[name] = str(reason)
        if not self.cmmd_clip:
            if "clip" in models:
                models["cmmd_clip"] = models["clip"]
            else:
                skipped["cmmd_clip"] = skipped["clip"]
        return models, skipped


PAPER_METRICS = {  # metric → (model family, column title)
    "fid": ("inception", "FID ↓"),
    "kid": ("inception", "KID×1000 ↓"),
    "cmmd": ("cmmd_clip", "CMMD ↓"),
    "dino_structure": ("dino", "DINO structure ↓"),
    "clip_score": ("clip", "CLIP score ↑"),
    "image_reward": ("imagereward", "ImageReward ↑"),
}


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


def generate(
    pipe, items: list[EvalItem], mode: str, out: Path, settings: dict, rank: int = 0, world_size: int = 1
) -> None:
    """Generate (or keep, when already on disk with the same settings) one image per item as {stem}.png.

    Process `rank` of `world_size` generates items rank, rank + world_size, …; each image is written
    atomically, so an interrupted run resumes with whole images. settings (model, its fingerprint, data,
    split, steps, seed, guidance) are saved as generation.json beside the images.
    """
    out.mkdir(parents=True, exist_ok=True)
    record = out / "generation.json"
    if record.exists() and read_json(record) != settings:
        raise ValueError(
            f"{out} holds images generated with other settings ({record.read_text().strip()}); "
            "pass another --out (or delete that folder) to evaluate these settings."
        )
    if not record.exists():
        write_json(record, settings, indent=None)
    mine = range(rank, len(items), world_size)
    for k in tqdm(mine, desc=f"generating ({mode})", unit="image", disable=rank != 0):
        item, path = items[k], out / f"{items[k].stem}.png"
        if path.exists():
            continue
        prompt = item.prompt if mode in ("text", "both") else None
        mask = item.labels if mode in ("mask", "both") else None
        image = pipe(prompt=prompt, mask=mask, num_inference_steps=settings["steps"], seed=settings["seed"] + k,
                     text_guidance=settings["text_guidance"], mask_guidance=settings["mask_guidance"],
                     sampler=settings["sampler"], text_interval=settings["text_interval"],
                     mask_interval=settings["mask_interval"], unconditional=mode == "none",
                     watermark=False)[0]  # the model itself is measured, unmarked  # fmt: skip
        atomic_write(path, lambda temporary, image=image: image.save(temporary, format="PNG"))


def read_generated(items: list[EvalItem], folder: Path) -> list[Image.Image]:
    """The generated image of each item, in item order."""
    return [Image.open(find_image(folder, item.stem)).convert("RGB") for item in items]


def generate_all(pipe, items, modes, out: Path, settings: dict, rank: int, world_size: int) -> None:
    """Every mode's images, this process's share of them; the first process then waits (without a time
    limit) until the others' shares are on disk, and a process that fails stops the others."""

    def work() -> None:
        for mode in modes:
            generate(pipe, items, mode, out / mode, settings, rank, world_size)

    paths = [out / mode / f"{item.stem}.png" for mode in modes for item in items]
    run_share(out, rank, world_size, work, lambda: all(p.exists() for p in paths),
              "Generating the evaluation's images")  # fmt: skip


def score(
    images: list[Image.Image], items: list[EvalItem], mode: str, parser, classifier, reference: dict
) -> tuple[dict, dict[str, np.ndarray]]:
    """Every metric that applies to a mode, for generated images in item order, and the per-item counts
    behind them (for paired comparisons between evaluations, see `compare`)."""
    resolution = classifier.config.resolution
    batch = images_to_tensor(images, resolution)
    result: dict = {"n": len(images)}
    per_item = {}
    if mode in ("mask", "both"):
        predicted = torch.cat([parser.parse(chunk) for chunk in batch.split(64)]).numpy()
        targets = np.stack([resize_labels(i.labels, resolution) for i in items])
        per_item["confusion"] = image_confusions(predicted, targets)  # [N, 19, 19]
        result["mask"] = confusion_scores(per_item["confusion"])
    if mode in ("text", "both"):
        predictions = [p for chunk in batch.split(64) for p in classifier.predict(chunk)]
        stated = [parse_caption(i.prompt) for i in items]
        per_item["attributes"] = attribute_hits(predictions, stated)  # [N, 2]
        result["text"] = attribute_accuracy(predictions, stated)
    features = _features(classifier, batch)
    per_item["features"] = features.astype(np.float32)  # [N, D]: for compare's paired Fréchet interval
    result["frechet"] = frechet_distance(features, reference["test_features"])
    result["kid"] = kernel_distance(
        features, reference["test_features"], subset_size=min(1000, len(features))
    )[0]
    result["patch_grid"] = patch_grid_score(images)
    return result, per_item


def paper_reference(items: list[EvalItem], train_items: list[EvalItem], models: dict) -> tuple[dict, dict]:
    """The paper's metrics on real faces (train vs test; test faces for their captions), and the real
    test-set embeddings every mode is compared with."""
    real, train = [i.real for i in items], [i.real for i in train_items]
    values, cache = {}, {}
    if "inception" in models:
        cache["inception"] = inception_features(models["inception"], real)
        values.update(_fid_kid(inception_features(models["inception"], train), cache["inception"]))
    clip_images = _clip_images(models, real)
    if "cmmd_clip" in models:
        cache["cmmd"] = clip_images["cmmd_clip"]
        values["cmmd"] = cmmd(models["cmmd_clip"].images(train), cache["cmmd"])
    if "clip" in models:
        cache["text"] = models["clip"].texts([i.prompt for i in items])
        values["clip_score"] = clip_score(clip_images["clip"], cache["text"])
    if "imagereward" in models:
        values["image_reward"] = image_reward(models["imagereward"], real, [i.prompt for i in items])
    return values, cache


def paper_scores(images: list[Image.Image], items: list[EvalItem], models: dict, cache: dict) -> dict:
    """The paper's metrics for generated images in item order (only those whose models are loaded)."""
    values = {}
    if "inception" in models:
        values.update(_fid_kid(inception_features(models["inception"], images), cache["inception"]))
    clip_images = _clip_images(models, images)
    if "cmmd_clip" in models:
        values["cmmd"] = cmmd(clip_images["cmmd_clip"], cache["cmmd"])
    if "dino" in models:
        values["dino_structure"] = models["dino"].distance(images, [i.real for i in items])
    if "clip" in models:
        values["clip_score"] = clip_score(clip_images["clip"], cache["text"])
    if "imagereward" in models:
        values["image_reward"] = image_reward(models["imagereward"], images, [i.prompt for i in items])
    return values


def _clip_images(models: dict, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """CLIP image embeddings per CLIP family; computed once when CMMD uses the CLIP score's model."""
    out: dict[str, torch.Tensor] = {}
    for family in ("clip", "cmmd_clip"):
        if family in models:
            same = [f for f in out if models[f] is models[family]]
            out[family] = out[same[0]] if same else models[family].images(images)
    return out


def _fid_kid(features: np.ndarray, reference: np.ndarray) -> dict:
    kid = kernel_distance(features, reference, subset_size=min(1000, len(features), len(reference)))[0]
    return {"fid": frechet_distance(features, reference), "kid": 1000 * kid}


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
        "patch_grid": patch_grid_score([i.real for i in items]),
    }


def _features(classifier, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([classifier.features(chunk) for chunk in images.split(64)]).double().numpy()


def evaluate(
    data: str | os.PathLike,
    out: str | os.PathLike,
    parser,
    classifier,
    pipe=None,
    model: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    modes: tuple[str, ...] = MODES,
    split: str = "test",
    n: int = 500,
    seed: int = 0,
    paper: PaperModels | None = None,
    sampling: dict | None = None,
    fingerprint: str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict | None:
    """Generate with `pipe` (or read `images`), score with the SynthFace `parser` and `classifier`, and
    write report.json, report.md, grid.png.

    pipe: a loaded FaceMoGLEPipeline, None with `images`. model: the folder it was loaded from, as the
    report names it (None: the shipped default model); fingerprint: a hash of its weights (images made
    by other weights at the same path are not reused). sampling: `SamplingDefaults` fields to override
    (steps, text_guidance, mask_guidance, sampler, text_interval, mask_interval); the others, and those
    given as None, are the model's. images: a folder of {stem}.png for one mode, or of <mode>/{stem}.png for several.
    rank, world_size: under `accelerate launch` each process generates its share; the first one scores
    and returns the report, the others return None.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolution = pipe.config.resolution if pipe else parser.config.resolution
    items = load_items(data, split, n, resolution)
    settings = _settings(pipe, model, fingerprint, data, split, seed, sampling or {})
    if pipe is not None:
        generate_all(pipe, items, modes, out, settings, rank, world_size)
    if rank != 0:
        return None
    paper = paper or PaperModels()
    paper_models, skipped = paper.load()
    train_items = load_items(data, "train", len(items), resolution)
    reference = reference_scores(items, train_items, parser, classifier)
    reference["paper"], paper_cache = paper_reference(items, train_items, paper_models)
    report = {**settings, "data": str(data), "n": len(items),
              "model": (str(model) if model else "the shipped default model") if pipe else None, "images": str(images) if images else None,
              "reference": {k: v for k, v in reference.items() if k != "test_features"},
              "paper_models": asdict(paper), "skipped": skipped, "modes": {}}  # fmt: skip
    generated = {}
    per_item = {
        "stems": np.array([i.stem for i in items]),
        "reference/features": reference["test_features"].astype(np.float32),
    }
    for mode in modes:
        generated[mode] = read_generated(items, mode_folder(out, images, mode, modes))
        report["modes"][mode], counts = score(generated[mode], items, mode, parser, classifier, reference)
        per_item.update({f"{mode}/{name}": value for name, value in counts.items()})
        report["modes"][mode]["paper"] = paper_scores(generated[mode], items, paper_models, paper_cache)
    atomic_write(out / PER_ITEM, lambda temporary: _save_npz(temporary, per_item))
    write_json(out / "report.json", report)
    atomic_write(out / "report.md", lambda temporary: Path(temporary).write_text(markdown(report)))
    sample_sheet(items[:8], generated).save(out / "grid.png")
    return report


def _save_npz(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez_* would add ".npz" to the temporary's name
        np.savez_compressed(f, **arrays)


SAMPLING_SETTINGS = ("steps", "text_guidance", "mask_guidance", "sampler", "text_interval", "mask_interval")


def _settings(pipe, model, fingerprint, data, split, seed, sampling: dict) -> dict:
    """What the generated images depend on (the reuse key), with the model's sampling defaults filled in."""
    unknown = set(sampling) - set(SAMPLING_SETTINGS)
    if unknown:
        raise ValueError(f"Unknown sampling settings {sorted(unknown)}; use {', '.join(SAMPLING_SETTINGS)}.")
    given = {name: sampling.get(name) for name in SAMPLING_SETTINGS}
    if pipe is not None:
        defaults = pipe.config.sampling.override(**given)
        given = {name: getattr(defaults, name) for name in SAMPLING_SETTINGS}
        given.update(text_interval=list(defaults.text_interval), mask_interval=list(defaults.mask_interval))
    return {"model": str(model) if model else "default", "fingerprint": fingerprint, "data": str(Path(data).resolve()),
            "split": split, "seed": seed, **given}  # fmt: skip


def mode_folder(out: Path, images: str | os.PathLike | None, mode: str, modes: tuple[str, ...]) -> Path:
    """Where a mode's images are: generated under out/<mode>, or the given folder (its <mode>/ subfolder
    when several modes are scored, since one set of images cannot be three modes' results)."""
    if images is None:
        return out / mode
    if (Path(images) / mode).is_dir():
        return Path(images) / mode
    if len(modes) > 1:
        raise ValueError(
            f"--images {images} is one folder but {len(modes)} modes were asked for: pass --mode with the one "
            "mode those images were made in, or give a folder with mask/, text/ and both/ subfolders."
        )
    return Path(images)


def find_image(folder: Path, stem: str) -> Path:
    """The image of one item in a folder of generated images, named {stem}.png (or .jpg, .jpeg, .webp)."""
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
        f"Data: {report['data']} ({report['split']} split), N = {report['n']} per mode, {_sampling(report)}, "
        f"seed {report['seed']}. Evaluators: the SynthFace parser and attribute classifier.",
        "",
        "| mode | mask mIoU ↑ | pixel acc ↑ | attribute acc ↑ | Fréchet (classifier features) ↓ | KID ↓ | patch grid ↓ |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, result in report["modes"].items():
        mask, text = result.get("mask"), result.get("text")
        lines.append(
            f"| {mode} | {_with_interval(mask, 'miou')} | {_fmt(mask and mask['pixel_accuracy'])} | "
            f"{_with_interval(text, 'accuracy')} | {result['frechet']:.3f} | {result['kid']:.4f} | "
            f"{_grid_cell(result.get('patch_grid'))} |"
        )
    lines.append(
        f"| real faces (reference) | {_with_interval(ref['mask'], 'miou')} | {_fmt(ref['mask']['pixel_accuracy'])} | "
        f"{_with_interval(ref['text'], 'accuracy')} | {ref['frechet']:.3f} (train vs test) | {ref['kid']:.4f} | "
        f"{_grid_cell(ref.get('patch_grid'))} |"
    )
    lines += [
        "",
        "In brackets: the 95% bootstrap interval over the N items (1,000 resamplings). Patch grid: mean",
        "|gradient| across patch boundaries over that inside patches, worst over patch sizes 2–16 (its size",
        "after the @), on the images at the size they were made; ≈ 1 without a grid.",
    ]
    lines += ["", "Per-class IoU of the parser on generated faces (mask mode) and on real faces:", "",
              "| class | generated | real |", "|---|---|---|"]  # fmt: skip
    generated_iou = (
        report["modes"].get("mask", report["modes"].get("both", {})).get("mask", {}).get("per_class_iou", {})
    )
    for name, value in ref["mask"]["per_class_iou"].items():
        lines.append(f"| {name} | {_fmt(generated_iou.get(name))} | {_fmt(value)} |")
    return "\n".join(lines + paper_markdown(report)) + "\n"


def paper_markdown(report: dict) -> list[str]:
    """The paper's table (FID, KID×1000, CMMD, DINO, CLIP, ImageReward) and what was skipped and why."""
    lines = ["", "The paper's metrics (DINO structure distance: per-image mean vs the real face of the same mask;",
             "CLIP score and ImageReward against each item's caption in every mode):", "",
             "| mode | " + " | ".join(title for _, title in PAPER_METRICS.values()) + " |",
             "|---|" + "---|" * len(PAPER_METRICS)]  # fmt: skip
    rows = {mode: result["paper"] for mode, result in report["modes"].items()}
    rows["real faces (reference)"] = report["reference"]["paper"]
    for name, values in rows.items():
        cells = [_paper_cell(metric, values, report["skipped"]) for metric in PAPER_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", "Skipped:"] + [
            f"- {family}: skipped: {reason}" for family, reason in report["skipped"].items()
        ]
    return lines


def _paper_cell(metric: str, values: dict, skipped: dict) -> str:
    if metric in values:
        return f"{values[metric]:.3f}"
    return "skipped" if PAPER_METRICS[metric][0] in skipped else "–"


def _grid_cell(grid: dict | None) -> str:
    """The patch-grid score, e.g. "1.21 @4 [1.18, 1.24]"; "–" for reports written before it existed."""
    if grid is None:
        return "–"
    low, high = grid["interval"]
    return f"{grid['worst']:.3f} @{grid['worst_patch']} [{low:.3f}, {high:.3f}]"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _sampling(report: dict) -> str:
    """e.g. "12 Euler steps, text guidance 4 (t in [0, 0.8]), mask guidance 1.5"."""
    if report["images"]:
        return "images made elsewhere"

    def term(name: str) -> str:
        low, high = report[f"{name}_interval"]
        within = "" if (low, high) == (0.0, 1.0) else f" (t in [{low:g}, {high:g}])"
        return f"{name} guidance {report[f'{name}_guidance']:g}{within}"

    return f"{report['steps']} {report['sampler'].capitalize()} steps, {term('text')}, {term('mask')}"


def _with_interval(scores: dict | None, key: str) -> str:
    """A score with its 95% bootstrap interval, e.g. "0.712 [0.698, 0.725]"."""
    if scores is None:
        return "–"
    low, high = scores[f"{key}_interval"]
    return f"{_fmt(scores[key])} [{low:.3f}, {high:.3f}]"
