"""Sampling quality against cost: the same N test items generated with each sampler setting (Euler and Heun
at 4–50 steps, guidance intervals), scored by `facemogle eval`, compared with the 50-step Euler reference on
paired intervals (`facemogle compare`). Cost is transformer rows per image — velocity evaluations × the
guidance branches each needs, summed over the three modes — weighted by sequence length (a branch without
the mask has no condition tokens), in rows with the mask. The chosen default is the cheapest setting not
worse than the reference beyond the paired interval on any mIoU, attribute accuracy or Fréchet distance.
Resumable: evaluations are reused, and each finished one is also kept in --results (results/sampling_curve)
without its generated images: commit it, and a later session restores it instead of evaluating again.

    python benchmarks/sampling_curve.py --model runs/default128/model --data data/synthface128 --n 200

Writes <runs>/curve.md (the table and the choice) and <runs>/curve.png (mIoU and accuracy against cost).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facemogle.cli import main as facemogle
from facemogle.flow import MASK_GUIDANCE, TEXT_GUIDANCE, guidance_branches, inside, time_grid, time_shift
from facemogle.metrics.archive import (
    ArchiveError,
    archive_evaluation,
    evaluators_fingerprint,
    restore_evaluation,
)
from facemogle.metrics.compare import compare, difference_cell
from facemogle.pipeline import FORMAT, default_model_folder, model_fingerprint, read_config

MODES = {"mask": (False, True), "text": (True, False), "both": (True, True)}  # (has text, has mask)
FULL = (0.0, 1.0)


@dataclass(frozen=True)
class CostInputs:
    """What the cost depends on: the sequence (image and text tokens) and the guidance scales the evaluations
    use (the model's sampling defaults: a scale of 1 runs no branch for its term)."""

    tokens: int = 256
    text_tokens: int = 48
    text_guidance: float = TEXT_GUIDANCE
    mask_guidance: float = MASK_GUIDANCE

    @classmethod
    def read(cls, folder: str | Path | None) -> CostInputs:
        """From a compact model folder's config.json (None: the shipped default)."""
        folder = Path(folder) if folder else default_model_folder()
        config = read_config(folder)
        if config["format"] != FORMAT:
            raise SystemExit(
                f"{folder} is a full-scale model; the curve's cost is counted for compact models."
            )
        sampling = config.get("sampling", {})
        return cls(
            (config["resolution"] // config["patch_size"]) ** 2, config["max_text_tokens"],
            sampling.get("text_guidance", TEXT_GUIDANCE), sampling.get("mask_guidance", MASK_GUIDANCE),
        )  # fmt: skip


@dataclass(frozen=True)
class Setting:
    sampler: str
    steps: int
    text_interval: tuple[float, float] = FULL
    mask_interval: tuple[float, float] = FULL

    @property
    def intervals(self) -> bool:
        """Guidance over part of the time range only."""
        return (self.text_interval, self.mask_interval) != (FULL, FULL)

    @property
    def name(self) -> str:
        name = f"{self.sampler}{self.steps}"
        if self.intervals:
            name += f"_t{self.text_interval[0]:g}-{self.text_interval[1]:g}_m{self.mask_interval[0]:g}-{self.mask_interval[1]:g}"
        return name

    def flags(self) -> list[str]:
        return ["--sampler", self.sampler, "--steps", str(self.steps),
                "--text-interval", *map(str, self.text_interval), "--mask-interval", *map(str, self.mask_interval)]  # fmt: skip

    def branches(self, mode: str, inputs: CostInputs) -> list[tuple[bool, bool]]:
        """The (text, mask) transformer rows per image in a mode: each velocity evaluation's branches."""
        has_text, has_mask = MODES[mode]
        grid = time_grid(self.steps, time_shift(inputs.tokens)).tolist()
        times = list(grid[:-1])
        if self.sampler == "heun":
            times += [t for t in grid[1:] if t > 0]  # the corrector's evaluations
        out = []
        for t in times:
            text_scale = inputs.text_guidance if inside(t, self.text_interval) else 1.0
            mask_scale = inputs.mask_guidance if inside(t, self.mask_interval) else 1.0
            out += guidance_branches(has_text, has_mask, text_scale, mask_scale)
        return out

    def rows(self, mode: str, inputs: CostInputs) -> int:
        return len(self.branches(mode, inputs))

    def cost(self, mode: str, inputs: CostInputs) -> float:
        """Rows per image weighted by sequence length, in rows with the mask: a row without it has no
        condition tokens (text + image tokens, against text + image + as many condition tokens)."""
        text, image = inputs.text_tokens, inputs.tokens
        return sum(
            (text + image * (1 + mask)) / (text + 2 * image) for _, mask in self.branches(mode, inputs)
        )


REFERENCE = Setting("euler", 50)
# ≈ 230 velocity evaluations per item in all: ≈ 3 h on this 2-core CPU at N = 200 (v2, 128²)
SETTINGS = [REFERENCE] + [Setting("euler", n) for n in (4, 8, 12, 16, 20, 28)] + [
    Setting("heun", n) for n in (3, 4, 6, 8)
] + [Setting("euler", n, (0.0, 0.8), (0.0, 0.8)) for n in (12, 20)] + [
    Setting("euler", n, (0.1, 0.9), (0.1, 1.0)) for n in (12, 20)
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--runs", default="runs/sampling_curve")
    parser.add_argument(
        "--results",
        default="results/sampling_curve",
        help="where each finished evaluation is kept without its generated images (commit it: a later session "
        "restores it instead of evaluating the setting again)",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    inputs = CostInputs.read(args.model)  # a folder it cannot count fails now, not after 3 h of evaluations
    runs = Path(args.runs)
    made_for = {"model": model_fingerprint(args.model), "data": args.data, "n": args.n,
                "evaluators": evaluators_fingerprint()}  # fmt: skip
    folders = []
    for setting in SETTINGS:
        out, kept = runs / setting.name, Path(args.results) / setting.name  # the name says the flags
        folders.append(str(out))
        try:
            if restore_evaluation(kept, out, made_for):
                continue
        except ArchiveError as error:
            raise SystemExit(str(error)) from None
        code = facemogle(["eval", *(["--model", args.model] if args.model else []), "--data", args.data,
                          "--n", str(args.n), "--out", str(out), "--device", args.device, *setting.flags()])  # fmt: skip
        if code:
            raise SystemExit(f"eval of {setting.name} failed with exit code {code}")
        archive_evaluation(out, kept, made_for, images=0)  # the curve shows no images
    table, points, choice = summarise(SETTINGS, compare(folders), inputs)
    (runs / "curve.md").write_text(table + f"\nChosen default: {choice}\n")
    plot(points, choice).save(runs / "curve.png")
    print(table + f"\nChosen default: {choice}")


def summarise(settings: list[Setting], rows: list[dict], inputs: CostInputs) -> tuple[str, list, str]:
    """The markdown table (one line per setting), the plot's points and the cheapest setting not worse than
    the reference beyond a paired interval."""
    by_eval: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_eval.setdefault(row["eval"], {})[row["mode"]] = row
    lines = ["| setting | rows per image (mask / text / both) | cost (rows with the mask) | mask mIoU (Δ) | text acc (Δ) | "
             "both mIoU (Δ) | both acc (Δ) | Fréchet (Δ: mask / text / both) | not worse |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    points, candidates = [], []
    for setting, modes in zip(settings, by_eval.values()):
        cells, worse = [], False
        for mode, metric in (("mask", "miou"), ("text", "accuracy"), ("both", "miou"), ("both", "accuracy")):
            row = modes[mode]
            low, high = row.get(f"{metric}_difference_interval", (0.0, 0.0))
            worse |= high < 0
            delta = row.get(f"{metric}_difference")
            cells.append(
                f"{row[metric]:.3f}" + ("" if delta is None else f" ({delta:+.3f} [{low:+.3f}, {high:+.3f}])")
            )
        for mode in MODES:  # realism counts too: a Fréchet above the reference's beyond its interval
            worse |= modes[mode].get("frechet_difference_interval", (0.0, 0.0))[0] > 0
        rows_per_image = " / ".join(str(setting.rows(mode, inputs)) for mode in MODES)
        cost = sum(setting.cost(mode, inputs) for mode in MODES)
        frechet = " / ".join(_frechet(modes[m]) for m in MODES)
        lines.append(f"| {setting.name} | {rows_per_image} | {cost:.1f} | {' | '.join(cells)} | {frechet} | "
                     f"{'no' if worse else 'yes'} |")  # fmt: skip
        points.append((setting, cost, modes["mask"]["miou"], modes["text"]["accuracy"]))
        if not worse:
            candidates.append((cost, setting.name))
    return "\n".join(lines) + "\n", points, min(candidates)[1]


def _frechet(row: dict) -> str:
    if "frechet_difference" not in row:
        return f"{row['frechet']:.1f}"
    return f"{row['frechet']:.1f} ({difference_cell(row, 'frechet', 1)})"


def plot(points: list, chosen: str | None = None, size: tuple[int, int] = (900, 520)) -> Image.Image:
    """mask mIoU (blue) and text accuracy (red) against the cost per image (all three modes, log scale):
    Euler circles, Heun squares, guidance-interval settings filled; each point labelled with its sampler
    and steps; the chosen setting ringed in black."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 70, 40, size[0] - 30, size[1] - 60
    draw.rectangle((left, top, right, bottom), outline="black")
    costs = np.log([p[1] for p in points])
    values = np.array([v for p in points for v in p[2:]])
    low, high = float(values.min()) - 0.02, float(values.max()) + 0.02

    def x_of(cost: float) -> float:
        return left + (np.log(cost) - costs.min()) / max(np.ptp(costs), 1e-9) * (right - left)

    def y_of(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    for value in np.linspace(low, high, 6):
        draw.line((left - 5, y_of(value), left, y_of(value)), fill="black")
        draw.text((8, y_of(value) - 6), f"{value:.3f}", fill="black")
    for cost in (10, 20, 50, 100, 200, 500):
        if np.exp(costs.min()) <= cost <= np.exp(costs.max()):
            draw.line((x_of(cost), bottom, x_of(cost), bottom + 5), fill="black")
            draw.text((x_of(cost) - 8, bottom + 8), str(cost), fill="black")
    for setting, cost, miou, accuracy in points:
        x = x_of(cost)
        label = f"{setting.sampler[0].upper()}{setting.steps}" + ("i" if setting.intervals else "")
        for value, color in ((miou, "blue"), (accuracy, "red")):
            y = y_of(value)
            box, fill = (x - 4, y - 4, x + 4, y + 4), color if setting.intervals else None
            (draw.rectangle if setting.sampler == "heun" else draw.ellipse)(box, outline=color, fill=fill, width=2)
            draw.text((x + 6, y - 6), label, fill=color)
            if setting.name == chosen:
                draw.ellipse((x - 8, y - 8, x + 8, y + 8), outline="black", width=1)
    draw.text((left, bottom + 26), "cost per image: transformer rows with the mask, all three modes (log scale)",
              fill="black")  # fmt: skip
    draw.text((left, 8), "blue: mask mIoU, red: text-only attribute accuracy (N = 200). E = Euler (circles), "
              "H = Heun (squares), i = guidance intervals (filled); ringed: the chosen default", fill="black")  # fmt: skip
    return image


if __name__ == "__main__":
    main()
