"""`facemogle eval --task edit`: edits of SynthFace pairs scored against the true edited face.

For each edit type (data/pairs.py) and pair index, face A is edited toward its counterfactual B by
each of METHODS, then scored:
- preservation outside the change: PSNR and SSIM on O, the pixels a mask edit of R* = (L_A ≠ L_B) ∪
  {|x_A − x_B| > 8} leaves to the source (outside R* grown, rounded to tokens and feathered), the same O for
  every method (paste-back keeps it exactly: PSNR ∞);
- the mask inside: the parser's IoU of the edited classes (those R* covers, in L_A or L_B) against L_B,
  within R* grown by the edit's growth — beside mask → face generation from L_B scored the same way;
- the stated change: the classifier's reading of the edited attribute equals B's (additions and changes)
  — beside text → face generation from B's caption;
- identity proxy: agreement of the classifier on every other attribute, edit vs A;
- seams: mean gradient magnitude in a band of the feather's width each side of the edited region's edge
  (the edge the method pastes back along: grown to tokens, or a painted-on attribute's own outline; 2 px
  in all at 64², 4 at 128²) over the mean in the bands twice as wide just inside and just outside; ≈ 1
  without a seam in a smooth area — and that score over the true B's in the same bands, since a band that
  crosses eyebrows or eyes, or lies on the lips' outline, scores above 1 on the true face too; a region
  too thin for the inner band has none (the seam's N is stated);
- realism: Fréchet distance of the classifier's features, edits vs the true B faces.
The true B faces are scored as a reference row too: the evaluators' ceilings for every column.
Every mean has a 95% bootstrap interval over pairs; N is stated per row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data.pairs import EDIT_TYPES, FacePair, make_pair, pair_caption
from ..edit import (
    FEATHER,
    GROW,
    EditError,
    NoChangeError,
    attribute_classes,
    attribute_target,
    class_region,
    feathered,
    painted_on,
    paste_region,
    token_region,
)
from ..images import image_grid, images_to_tensor
from ..io import atomic_write, read_json, run_share, write_json
from ..labels import NUM_CLASSES
from ..parsing import parse_images
from .bootstrap import bootstrap_interval
from .fid import frechet_distance

PAIR_SEED = 0
DIFFERENT = 8  # |x_A − x_B| above this (any channel, 0..255) counts as changed
# How each pair is edited: `edit` options (None: the method does not apply to removals). "nothing" is A.
METHODS = {
    "nothing": None,
    "mask edit": dict(operation="mask", method="blend"),
    "attribute edit": dict(operation="attribute"),  # the default: FlowEdit, or a drawn shape blended
    "sdedit (unblended)": dict(operation="regenerate", method="sdedit", strength=0.7),
    "inversion (unblended)": dict(operation="regenerate", method="inversion", strength=0.85),
}
REFERENCES = ("mask → face", "text → face")
TRUTH = "true edit B"  # the counterfactual itself: every score a perfect edit gets
# Classifier heads that move with the edited attribute (not counted in the agreement on the others).
COUPLED = {"smiling": ("smiling", "mouth"), "hair_length": ("hair_length", "hair_style", "bangs"),
           "hat": ("hat", "hair_length", "hair_color", "hair_style", "bangs", "receding_hairline"),
           "bangs": ("bangs", "receding_hairline")}  # fmt: skip


def pairs_for(n_per_type: int, size: int, types=EDIT_TYPES) -> list[FacePair]:
    return [make_pair(i, t, PAIR_SEED, size) for t in types for i in range(n_per_type)]


def edit_pair(pipe, pair: FacePair, name: str, seed: int, steps: int | None, parser=None, classifier=None):
    """Pair A edited by METHODS[name] (None where the method does not apply), or a reference generation.

    An attribute edit that the classifier's reading of A makes a no-op (A already reads as B) counts as
    the edit that changed nothing: A itself."""
    if name == "nothing":
        return pair.source
    if name == "mask → face":
        return pipe(mask=pair.target_labels, seed=seed, num_inference_steps=steps)[0]
    if name == "text → face":
        return pipe(prompt=pair_caption(pair), seed=seed, num_inference_steps=steps)[0]
    if not applies(name, pair):
        return None
    options = dict(METHODS[name], source_mask=pair.source_labels, seed=seed, num_inference_steps=steps)
    if options["operation"] == "attribute":
        try:
            return pipe.edit(pair.source, prompt=pair.instruction, parser=parser, classifier=classifier,
                             **options).images[0]  # fmt: skip
        except NoChangeError:
            return pair.source
    if options["operation"] == "mask":
        return pipe.edit(pair.source, mask=pair.target_labels, **options).images[0]
    # the unblended baselines: the whole face regenerated under B's mask and caption
    return pipe.edit(pair.source, mask=pair.target_labels, prompt=pair_caption(pair), **options).images[0]


def applies(name: str, pair: FacePair) -> bool:
    """Attribute edits make additions and changes (a removal is a mask edit); a mask edit needs a mask change."""
    if name == "attribute edit":
        return pair.instruction is not None
    if name == "mask edit":
        return bool((pair.source_labels != pair.target_labels).any())
    return True


def generate_edits(
    pipe,
    pairs: list[FacePair],
    out: Path,
    settings: dict,
    steps: int | None,
    rank: int = 0,
    world_size: int = 1,
    parser=None,
    classifier=None,
) -> None:
    """Every method's and reference's image of every pair, as {out}/{name}/{type}_{index}.png (kept when
    already on disk with the same settings; each written atomically). Process `rank` of `world_size` makes
    jobs rank, rank + world_size, …; the first then waits for the others' (a failed one stops it)."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / "generation.json"
    if record.exists() and read_json(record) != settings:
        raise ValueError(
            f"{out} holds edits made with other settings ({record.read_text().strip()}); pass another --out."
        )
    if rank == 0:
        write_json(record, settings, indent=None)
    names = [n for n in (*METHODS, *REFERENCES) if n != "nothing"]
    jobs = [(name, k) for name in names for k in range(len(pairs)) if applies(name, pairs[k])]
    stems = _stems(pairs)
    paths = [out / _folder(name) / f"{stems[k]}.png" for name, k in jobs]

    def work() -> None:
        for (name, k), path in tqdm(list(zip(jobs, paths))[rank::world_size], desc="editing", unit="image",
                                    disable=rank != 0):  # fmt: skip
            if path.exists():
                continue
            image = edit_pair(pipe, pairs[k], name, settings["seed"] + k, steps, parser, classifier)
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, lambda temporary, image=image: image.save(temporary, format="PNG"))

    run_share(
        out, rank, world_size, work, lambda: all(p.exists() for p in paths), "Editing the evaluation's pairs"
    )


def _folder(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _stems(pairs: list[FacePair]) -> list[str]:
    """Each pair's file stem, {type}_{its index among the pairs of that type}."""
    seen: dict[str, int] = {}
    stems = []
    for pair in pairs:
        stems.append(f"{pair.edit_type}_{seen.get(pair.edit_type, 0)}")
        seen[pair.edit_type] = seen.get(pair.edit_type, 0) + 1
    return stems


def read_edits(pairs: list[FacePair], out: Path, name: str) -> list[Image.Image | None]:
    if name == "nothing":
        return [p.source for p in pairs]
    if name == TRUTH:
        return [p.target for p in pairs]
    paths = [out / _folder(name) / f"{stem}.png" for stem in _stems(pairs)]
    return [Image.open(p).convert("RGB") if p.exists() else None for p in paths]


# --- per-pair measurements ---


def change_region(pair: FacePair) -> np.ndarray:
    """R*: where B differs from A, in labels or by more than DIFFERENT in a channel [H, W] bool."""
    a, b = np.asarray(pair.source, np.int16), np.asarray(pair.target, np.int16)
    return (pair.source_labels != pair.target_labels) | (np.abs(a - b).max(-1) > DIFFERENT)


def _dilate(region: np.ndarray, pixels: int) -> np.ndarray:
    x = torch.from_numpy(region.astype(np.float32))[None, None]
    return F.max_pool2d(x, 2 * pixels + 1, 1, pixels)[0, 0].numpy() > 0


def _erode(region: np.ndarray, pixels: int) -> np.ndarray:
    return ~_dilate(~region, pixels)


def outside(pair: FacePair, patch: int) -> np.ndarray:
    """O: where a mask edit of R* pastes the source back unchanged (weight 0)."""
    return feathered(token_region(change_region(pair), patch)).numpy() == 0


def squared_error(edit: np.ndarray, truth: np.ndarray, where: np.ndarray) -> np.ndarray:
    """[2]: the sum of squared errors (0..255 scale) over `where`'s pixels and channels, and their count."""
    diff = (edit.astype(np.float64) - truth.astype(np.float64))[where]
    return np.array([(diff**2).sum(), diff.size], float)


def psnr(total: np.ndarray) -> float:
    """PSNR (dB) from summed [sse, count]; ∞ for an exact match."""
    mse = total[0] / max(total[1], 1)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray, window: int = 7) -> np.ndarray:
    """Per-pixel SSIM (uniform window, grey levels 0..255, constants of Wang et al. 2004) [H, W]."""
    x = torch.from_numpy(np.asarray(a, np.float64).mean(-1))[None, None]
    y = torch.from_numpy(np.asarray(b, np.float64).mean(-1))[None, None]

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, window, 1, window // 2, count_include_pad=False)

    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value[0, 0].numpy()


def class_overlap(predicted: np.ndarray, pair: FacePair) -> np.ndarray:
    """[2, 19]: per class, intersection and union of the parser's map and L_B within R* grown, for the
    classes R* covers in L_A or L_B (zeros for the others)."""
    changed = pair.source_labels != pair.target_labels
    within = _dilate(changed, max(1, round(GROW * changed.shape[0])))
    classes = np.unique(np.concatenate([pair.source_labels[changed], pair.target_labels[changed]]))
    counts = np.zeros((2, NUM_CLASSES))
    for c in classes:
        p, t = (predicted == c) & within, (pair.target_labels == c) & within
        counts[:, c] = (p & t).sum(), (p | t).sum()
    return counts


def mean_iou(total: np.ndarray) -> float:
    present = total[1] > 0
    return float((total[0][present] / total[1][present]).mean()) if present.any() else float("nan")


def seam_score(image: np.ndarray, region: np.ndarray) -> float:
    """Mean |∇| in a band of the paste-back's feather width w each side of the region's edge (2 px at 64²,
    4 at 128²) over the mean in the bands of 2w just inside and just outside it; nan when the region has
    no edge."""
    grey = np.asarray(image, np.float64).mean(-1)
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    w = max(1, round(FEATHER * region.shape[0]))
    band = _dilate(region, w) & ~_erode(region, w)
    inner = _erode(region, w) & ~_erode(region, 3 * w)
    outer = _dilate(region, 3 * w) & ~_dilate(region, w)
    if not (band.any() and inner.any() and outer.any()):
        return float("nan")
    return float(magnitude[band].mean() / ((magnitude[inner].mean() + magnitude[outer].mean()) / 2 + 1e-6))


def edited_region(pair: FacePair, name: str, patch: int) -> np.ndarray:
    """Where a method's region edge is, for its seams, as the edit pastes it back (grown to tokens, or a
    painted-on attribute's own pixels): the attribute edit's own region (the drawn shape's change, or the
    keyword classes); else the mask edit's (the label change; the instruction's classes where the labels
    do not change)."""
    changed = pair.source_labels != pair.target_labels
    painted = False
    if name == "attribute edit" or not changed.any():
        classes = attribute_classes(_instruction(pair))
        try:
            _, changed, shapes, repainted = attribute_target(pair.source_labels, _instruction(pair), classes)
            painted = painted_on(_instruction(pair), repainted, shapes)
        except EditError:  # nothing drawn (the edit returned A): the keyword classes' edge
            changed = class_region(pair.source_labels, classes)
    return paste_region(changed, patch, painted).numpy() > 0.5


def _instruction(pair: FacePair) -> str:
    return pair.instruction or f"add {pair.edit_type}"


def score_method(images, pairs, parser, classifier, patch: int, name: str, realism: bool = False) -> dict:
    """Every measurement of one method's (or reference's) images over the pairs it applies to."""
    kept = [(im, p) for im, p in zip(images, pairs) if im is not None]
    if not kept:
        return {"n": 0}
    edits, used = [np.asarray(im) for im, _ in kept], [p for _, p in kept]
    batch = images_to_tensor([im for im, _ in kept], classifier.config.resolution)
    side = edits[0].shape[0]  # the pairs' size: labels are compared there
    parsed = parse_images(parser, images_to_tensor([im for im, _ in kept], parser.config.resolution), side)
    readings = [r for chunk in batch.split(64) for r in classifier.predict(chunk)]
    sources = classifier.predict(images_to_tensor([p.source for p in used], classifier.config.resolution))
    kept_regions = [outside(p, patch) for p in used]
    seams = np.array([[seam_score(e, r), seam_score(np.asarray(p.target), r)]
                      for e, p, r in zip(edits, used, (edited_region(p, name, patch) for p in used))])  # fmt: skip
    seams = seams[~np.isnan(seams).any(1)]  # [pairs with an edge, (edit's, B's)]
    per = {
        "outside": np.stack(
            [squared_error(e, np.asarray(p.source), o) for e, p, o in zip(edits, used, kept_regions)]
        ),
        "ssim": np.array(
            [[ssim_map(e, p.source)[o].mean(), 1] for e, p, o in zip(edits, used, kept_regions)]
        ),
        "overlap": np.stack([class_overlap(m, p) for m, p in zip(parsed, used)]),
        "attribute": np.array(
            [[r.get(p.attribute) == p.value, 1] for r, p in zip(readings, used)],
            float,
        ),  # fmt: skip
        "agreement": np.array([_agreement(r, s, p) for r, s, p in zip(readings, sources, used)]),
        "seam": np.c_[seams[:, 0], np.ones(len(seams))],
        "seam_truth": seams,
    }
    result = {"n": len(used), "seam_n": len(seams), **_summaries(per)}
    if realism:  # pooled over edit types only: Fréchet needs many items
        truth = images_to_tensor([p.target for p in used], classifier.config.resolution)
        result["frechet"] = frechet_distance(_features(classifier, batch), _features(classifier, truth))
    return result


def _features(classifier, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([classifier.features(chunk) for chunk in images.split(64)]).numpy()


def _agreement(reading: dict, source: dict, pair: FacePair) -> list[float]:
    others = [h for h in source if h not in COUPLED.get(pair.attribute, (pair.attribute,))]
    return [sum(reading[h] == source[h] for h in others), len(others)]


def _ratio(total: np.ndarray) -> float:
    return float(total[0] / total[1]) if total[1] else float("nan")


def _summaries(per: dict) -> dict:
    statistics = {"outside": ("psnr_outside", psnr), "ssim": ("ssim_outside", _ratio),
                  "overlap": ("class_iou", mean_iou), "attribute": ("attribute_accuracy", _ratio),
                  "agreement": ("agreement", _ratio), "seam": ("seam", _ratio),
                  "seam_truth": ("seam_vs_truth", _ratio)}  # fmt: skip
    out = {}
    for key, (name, statistic) in statistics.items():
        values = per[key]
        if key == "attribute":
            values = values[values[:, 1] > 0]
        total = values.sum(0) if len(values) else None
        out[name] = None if total is None else statistic(total)
        out[f"{name}_interval"] = None if total is None else bootstrap_interval(values, statistic)
    return out


# --- the report ---


def evaluate_edits(
    pipe, out: str | os.PathLike, parser, classifier, n_per_type: int = 100, steps: int | None = None,
    seed: int = 0, fingerprint: str | None = None, model: str | None = None, types=EDIT_TYPES,
    rank: int = 0, world_size: int = 1,
) -> dict | None:  # fmt: skip
    """Edit n_per_type pairs of each type with every method, score, write report.json, report.md, grid.png.
    Under `accelerate launch` / torchrun each process edits its share; the first scores and returns the report."""
    out = Path(out)
    pairs = pairs_for(n_per_type, pipe.model.resolution, types)
    sampling = pipe.config.sampling.override(steps=steps)
    settings = {"model": model or "default", "fingerprint": fingerprint, "n_per_type": n_per_type,
                "types": list(types), "steps": sampling.steps, "seed": seed, "pair_seed": PAIR_SEED}  # fmt: skip
    generate_edits(pipe, pairs, out, settings, sampling.steps, rank, world_size, parser, classifier)
    if rank != 0:
        return None
    report = {**settings, "methods": {}, "references": {}}
    images = {name: read_edits(pairs, out, name) for name in (*METHODS, *REFERENCES, TRUTH)}
    for name, group in (
        *((n, "methods") for n in METHODS),
        *((n, "references") for n in (*REFERENCES, TRUTH)),
    ):
        patch = pipe.model.patch_size
        report[group][name] = {
            "all": score_method(images[name], pairs, parser, classifier, patch, name, realism=True)
        }
        for edit_type in types:
            chosen = [k for k, p in enumerate(pairs) if p.edit_type == edit_type]
            chosen_images, chosen_pairs = [images[name][k] for k in chosen], [pairs[k] for k in chosen]
            report[group][name][edit_type] = score_method(
                chosen_images, chosen_pairs, parser, classifier, patch, name
            )
    write_json(out / "report.json", json_safe(report))
    atomic_write(out / "report.md", lambda temporary: Path(temporary).write_text(edit_markdown(report)))
    grid = edit_grid(pairs, images, types)
    atomic_write(out / "grid.png", lambda temporary: grid.save(temporary, format="PNG"))
    return report


def json_safe(value):
    """The report with ∞ as "inf" and NaN (no item to score) as null: strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def edit_grid(pairs: list[FacePair], images: dict, types, per_type: int = 2) -> Image.Image:
    """Rows: source | each method's edit | target B (blank where a method does not apply)."""
    rows = []
    for edit_type in types:
        for k in [k for k, p in enumerate(pairs) if p.edit_type == edit_type][:per_type]:
            blank = Image.new("RGB", pairs[k].source.size, "white")
            rows.append([pairs[k].source] + [images[m][k] or blank for m in METHODS if m != "nothing"]
                        + [pairs[k].target])  # fmt: skip
    return image_grid(rows)


COLUMNS = (("psnr_outside", "PSNR outside ↑"), ("ssim_outside", "SSIM outside ↑"),
           ("class_iou", "IoU edited classes ↑"), ("attribute_accuracy", "attribute acc ↑"),
           ("agreement", "agreement (other attributes) ↑"), ("seam", "seam ↓ (≈1)"),
           ("seam_vs_truth", "seam ÷ true B's ↓ (≈1)"))  # fmt: skip


def edit_markdown(report: dict) -> str:
    lines = [
        f"# Editing evaluation: {'the shipped default model' if report['model'] == 'default' else report['model']}",
        "",
        f"SynthFace pairs (seed {report['pair_seed']}), {report['n_per_type']} per edit type, {report['steps']} "
        f"steps, seed {report['seed']}. In brackets: 95% bootstrap intervals over pairs. Fréchet: classifier "
        "features of the edits vs the true edited faces B. Attribute accuracy: the classifier reads the changed "
        "attribute as in B (the attribute edit makes additions and changes; removals are mask edits). Seam ÷ "
        "true B's: the seam score over B's in the same bands (1: no more edge than the true face has); a "
        "region with no inner band (thin lips) has no seam score, so the seam's N, where smaller, is beside it. The "
        f"'{TRUTH}' rows score B itself: the evaluators' ceilings.",
        "",
        "| edit type | method | N | " + " | ".join(title for _, title in COLUMNS) + " | Fréchet ↓ |",
        "|---|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for edit_type in ("all", *report["types"]):
        for group in ("methods", "references"):
            for name, results in report[group].items():
                row = results[edit_type]
                if not row["n"]:
                    continue
                cells = [_cell(row, key) + _seam_n(row, key) for key, _ in COLUMNS] + [_fmt(row.get("frechet"))]
                lines.append(f"| {edit_type} | {name} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", *targets_markdown(report)]) + "\n"


# The editing issue's targets per edit type: (method, column, reference or None, margin or bound, direction).
TARGETS = (
    ("mask edit", "class_iou", "mask → face", -0.05, "≥"),
    ("attribute edit", "attribute_accuracy", "text → face", -0.05, "≥"),
    ("attribute edit", "agreement", None, 0.95, "≥"),
    ("mask edit", "seam", None, 1.2, "≤"),
    ("attribute edit", "seam", None, 1.2, "≤"),
)


def target_rows(report: dict) -> list[dict]:
    """Each target of each edit type the method applies to: the value, its interval, the target (a
    reference's value plus a margin, or a bound) and a verdict — "met" (the value reaches it), "within the
    interval" (only the interval does) or "missed". B's value (the evaluators' ceiling) beside it. Where the
    true faces B fail a seam bound themselves (the band lies on the face's own edges), the seam over B's
    (seam_vs_truth) is judged against the same bound in a row of its own, after the seam's."""
    rows = []
    for edit_type in report["types"]:
        for method, key, reference, margin, direction in TARGETS:
            keys = [key]
            if key == "seam" and _truth_seam(report["methods"][method][edit_type]) > margin:
                keys.append("seam_vs_truth")
            for key in keys:
                row = _target_row(report, edit_type, method, key, reference, margin, direction)
                rows += [row] if row else []
    return rows


def _target_row(report: dict, edit_type: str, method: str, key: str, reference, margin: float, direction: str):
    row = report["methods"][method][edit_type]
    value = _number(row.get(key)) if row["n"] else float("nan")
    if np.isnan(value):
        return None
    low, high = (_number(b) for b in row[f"{key}_interval"])
    target = margin + (_number(report["references"][reference][edit_type].get(key)) if reference else 0.0)
    sign = 1 if direction == "≥" else -1  # exact ties count as reached: 1e-9 absorbs float rounding
    reached, near = (sign * (v - target) >= -1e-9 for v in (value, high if sign > 0 else low))
    verdict = "met" if reached else "within the interval" if near else "missed"
    ceiling = _truth_seam(row) if key == "seam" else _number(report["references"][TRUTH][edit_type].get(key))
    return {"type": edit_type, "method": method, "metric": key, "direction": direction, "value": value,
            "interval": (low, high), "target": target, "reference": reference, "margin": margin,
            "ceiling": ceiling, "verdict": "no reference" if np.isnan(target) else verdict}  # fmt: skip


def _truth_seam(row: dict) -> float:
    """The true faces B's seam score in a method's own bands (its seam over its seam ÷ B's)."""
    if not row["n"]:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(_number(row.get("seam"))) / _number(row.get("seam_vs_truth")))


def targets_markdown(report: dict) -> list[str]:
    lines = [
        "## Targets",
        "",
        "Per edit type: mask edits' IoU ≥ mask → face's − 0.05 (same target masks); attribute edits' accuracy ≥ "
        "text → face's − 0.05 and agreement on the other attributes ≥ 0.95; seam ≤ 1.2 — and where the true faces B "
        "score above 1.2 themselves (the band lies on the face's own edges: a painted-on attribute pasted along "
        "the lips' outline), also seam ÷ true B's ≤ 1.2 (seam_vs_truth). Met: the value reaches "
        "the target; within the interval: only its 95% interval does. True B: the same score of the true edited "
        "faces (the evaluators' ceiling).",
        "",
        "| edit type | method | metric | value | target | true B | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in target_rows(report):
        low, high = r["interval"]
        target = f"{r['direction']} {r['target']:.3f}" + (
            f" ({r['reference']} {'−' if r['margin'] < 0 else '+'} {abs(r['margin']):.2f})"
            if r["reference"]
            else ""
        )
        lines.append(f"| {r['type']} | {r['method']} | {r['metric']} | {r['value']:.3f} [{low:.3f}, {high:.3f}] | "
                     f"{target} | {r['ceiling']:.3f} | {r['verdict']} |")  # fmt: skip
    return lines


def _number(value) -> float:
    """A report value as a float, whether from the evaluation or read back from report.json (json_safe)."""
    return float("nan") if value is None else float(value)  # float("inf") reads json_safe's "inf"


def _fmt(value) -> str:
    return "–" if value is None else f"{max(value, 0.0):.1f}"  # ≥ 0: B against itself rounds to −0


def _seam_n(row: dict, key: str) -> str:
    """The seam's own N where it is fewer pairs than the row's: a region too thin for the inner band
    (thin lips at 128²) has no seam score."""
    n = row.get("seam_n", row["n"])
    return f" (N {n})" if key.startswith("seam") and n < row["n"] and np.isfinite(_number(row.get(key))) else ""


def _cell(row: dict, key: str) -> str:
    value = _number(row.get(key))
    if np.isnan(value):
        return "–"
    if np.isinf(value):
        return "∞ (identical)"
    bounds = (_number(bound) for bound in row[f"{key}_interval"])
    low, high = (f"{bound:.3f}" if np.isfinite(bound) else "∞" for bound in bounds)
    return f"{value:.3f} [{low}, {high}]"  # ∞: resamples of identical pairs only
