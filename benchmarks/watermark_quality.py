"""Whether the watermark moves a quality metric: an evaluation's images marked and scored again on the same
items, compared with the unmarked ones with paired intervals (mIoU, attribute accuracy), and each mode's
Fréchet change beside its run-to-run spread (the same model at other seeds, equal N: each seed's change
from the first evaluation, and the largest).

    facemogle eval --data data/synthface128 --n 500 --out eval_v2                 # eval saves unmarked images
    facemogle eval --data data/synthface128 --n 500 --seed 1 --out eval_v2_seed1  # the spread (optional;
    facemogle eval --data data/synthface128 --n 500 --seed 2 --out eval_v2_seed2  #   one seed or more)
    python benchmarks/watermark_quality.py eval_v2 --data data/synthface128 --spread eval_v2_seed1 eval_v2_seed2 \
        --out eval_v2_marked
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from facemogle.cli import main as facemogle
from facemogle.data.folders import FaceMaskTextDataset
from facemogle.io import atomic_write
from facemogle.metrics.compare import compare, compare_markdown
from facemogle.metrics.report import find_image, mode_folder
from facemogle.watermark import mark


def mark_folder(evaluation: Path, report: dict, out: Path) -> None:
    """The images each mode of an evaluation scored, marked, as out/<mode>/{stem}.png (kept when there and
    marked from the same evaluation; another evaluation's are refused)."""
    modes = tuple(report["modes"])
    stems = FaceMaskTextDataset(report["data"], split=report["split"]).stems[: report["n"]]
    settings = ("model", "fingerprint", "data", "split", "n", "seed", "steps", "text_guidance", "mask_guidance",
                "sampler", "text_interval", "mask_interval", "images")  # what made the images  # fmt: skip
    source_record = {"evaluation": str(evaluation.resolve()), "modes": list(modes),
                     **{k: report.get(k) for k in settings}}  # fmt: skip
    record = out / "marked_from.json"
    if record.exists() and json.loads(record.read_text()) != source_record:
        raise SystemExit(f"{out} holds images marked from another evaluation ({record.read_text().strip()}); "
                         "pass another --out.")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(source_record) + "\n")
    for mode in modes:
        (out / mode).mkdir(parents=True, exist_ok=True)
        source = mode_folder(evaluation, report["images"], mode, modes)
        for stem in tqdm(stems, desc=f"marking {mode}", unit="image"):
            target = out / mode / f"{stem}.png"
            if not target.exists():
                marked = mark(Image.open(find_image(source, stem)).convert("RGB"))
                atomic_write(target, lambda temporary, m=marked: m.save(temporary, format="PNG"))


def frechet_table(rows: list[dict], unmarked: str, marked: str, spread: dict[str, dict[str, float]]) -> str:
    """Per mode: Fréchet unmarked, marked, their difference, and each other seed's difference from the
    unmarked evaluation with the largest in size. spread: evaluation folder → mode → Fréchet."""
    value = {(r["eval"], r["mode"]): r["frechet"] for r in rows}
    lines = ["| mode | Fréchet unmarked | marked | marked − unmarked | run-to-run spread (other seeds − this; largest) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for mode in dict.fromkeys(r["mode"] for r in rows if r["eval"] == unmarked):
        base, after = value[(unmarked, mode)], value[(marked, mode)]
        others = [modes[mode] - base for modes in spread.values() if mode in modes]
        spread_cell = (
            ", ".join(f"{d:+.2f}" for d in others) + f"; {max(map(abs, others)):.2f}" if others else "–"
        )
        lines.append(f"| {mode} | {base:.2f} | {after:.2f} | {after - base:+.2f} | {spread_cell} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("evaluation", help="a `facemogle eval --out` folder (its images are unmarked)")
    parser.add_argument("--data", required=True, help="the dataset that evaluation scored against")
    parser.add_argument(
        "--spread", nargs="+", default=[], help="the same model's evaluations at other --seed, equal N"
    )
    parser.add_argument("--out", required=True, help="where the marked images and their report go")
    args = parser.parse_args()
    evaluation, out = Path(args.evaluation), Path(args.out)
    report = json.loads((evaluation / "report.json").read_text())
    modes = list(report["modes"])
    mark_folder(evaluation, report, out / "images")
    score = ["eval", "--images", str(out / "images"), "--data", args.data, "--split", report["split"],
             "--n", str(report["n"]), "--seed", str(report["seed"]), "--mode", *modes, "--out", str(out / "eval")]  # fmt: skip
    if facemogle(score) != 0:
        raise SystemExit("scoring the marked images failed (see above)")
    folders = [str(evaluation), str(out / "eval")]
    rows = compare(folders)
    spread = {folder: _frechets(Path(folder), report) for folder in args.spread}
    table = (f"{report['n']} items per mode; the marked images against {evaluation} (paired, 95% intervals):\n\n"
             + compare_markdown(rows) + "\n\n" + frechet_table(rows, *folders, spread))  # fmt: skip
    print(table)
    atomic_write(out / "watermark_quality.md", lambda temporary: Path(temporary).write_text(table + "\n"))


def _frechets(folder: Path, report: dict) -> dict[str, float]:
    """Each mode's Fréchet of another seed's evaluation of the same items (checked: data, split, n)."""
    other = json.loads((folder / "report.json").read_text())
    if any(other[k] != report[k] for k in ("data", "split", "n")):
        raise SystemExit(
            f"{folder} did not evaluate the same items (data, split, n) as the unmarked evaluation."
        )
    return {mode: result["frechet"] for mode, result in other["modes"].items()}


if __name__ == "__main__":
    main()
