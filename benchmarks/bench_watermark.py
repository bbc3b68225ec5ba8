"""The watermarks' robustness and cost on faces, one run: bit accuracy and "found" rate after JPEG 75, 2×
down- and up-scaling, both, an upscale, and a heavy crop — facemogle's own mark on the faces as they are
(128²) and, on the faces enlarged to 512² as full-scale outputs are, ours and invisible-watermark's
(DWT-DCT-SVD) together; the PSNR of marking; and the false-positive rate on the same faces unmarked, with
its 95% upper bound and the distribution of matching bits.

    python benchmarks/bench_watermark.py --faces data/synthface128/face --n 500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from facemogle.detector import degrade
from facemogle.watermark import DECISION, LIBRARY_METHOD, mark, read, read_library


def crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 8, h // 8, w - w // 16, h - h // 16)).resize((w, h), Image.BICUBIC)


def attacks(side: int) -> dict:
    return {
        "none": lambda im: im,
        "JPEG 75": lambda im: degrade(im, "jpeg75"),
        "2× down + up": lambda im: degrade(im, "resize2x"),
        "2× down + up, then JPEG 75": lambda im: degrade(degrade(im, "resize2x"), "jpeg75"),
        f"resized to {4 * side}²": lambda im: im.resize((4 * side, 4 * side), Image.BICUBIC),
        "cropped to 81%, resized back": crop,
    }


def psnr(a: Image.Image, b: Image.Image) -> float:
    return float(10 * np.log10(255**2 / ((np.asarray(a, float) - np.asarray(b, float)) ** 2).mean()))


def robustness(faces: list[Image.Image], readers: dict) -> None:
    """Mark the faces, attack them, read each mark: a table row per attack and mark."""
    marked = [mark(f) for f in faces]
    costs = [psnr(f, m) for f, m in zip(faces, marked)]
    print(f"\n{len(faces)} faces of {faces[0].width}², marked ({' + '.join(readers)}) at PSNR {np.mean(costs):.1f} dB "
          f"(lowest {np.min(costs):.1f}); found: ≥ {DECISION} of 32 bits\n")  # fmt: skip
    print("| attack | mark | bit accuracy (mean) | lowest | found |")
    print("|---|---|---|---|---|")
    for name, attack in attacks(faces[0].width).items():
        attacked = [attack(m) for m in marked]
        for mark_name, reader in readers.items():
            readings = [r for r in (reader(a) for a in attacked) if r is not None]
            if not readings:  # the library mark needs 256² or more
                continue
            accuracy = [r.bit_accuracy for r in readings]
            print(f"| {name} | {mark_name} | {np.mean(accuracy):.3f} | {np.min(accuracy):.3f} | "
                  f"{np.mean([r.marked for r in readings]):.3f} |")  # fmt: skip


def false_positives(faces: list[Image.Image], readers: dict) -> None:
    print("\n| unmarked faces | mark | N | read as marked | 95% upper bound | matching bits: mean, sd, max |")
    print("|---|---|---|---|---|---|")
    for kind in ("none", "jpeg75"):
        seen = [degrade(f, kind) for f in faces]
        for mark_name, reader in readers.items():
            readings = [r for r in (reader(s) for s in seen) if r is not None]
            if not readings:
                continue
            matching = np.array([r.matching for r in readings])
            false = int((matching >= DECISION).sum())
            bound = 1 - 0.05 ** (1 / len(readings)) if false == 0 else float("nan")  # exact, for 0 of N
            print(f"| {faces[0].width}², {'as they are' if kind == 'none' else 'after JPEG 75'} | {mark_name} | "
                  f"{len(readings)} | {false} | {bound:.1e} | {matching.mean():.1f}, {matching.std():.1f}, "
                  f"{matching.max()} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", required=True, help="a folder of face images of 128² or more")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument(
        "--n-large", type=int, default=100, help="faces enlarged to 512² (full-scale outputs)"
    )
    parser.add_argument("--n-unmarked", type=int, default=3000, help="faces read unmarked (false positives)")
    args = parser.parse_args()
    paths = sorted(Path(args.faces).iterdir())
    faces = [Image.open(p).convert("RGB") for p in paths[: max(args.n, args.n_unmarked)]]
    ours = {"facemogle": read}
    both = {"facemogle": read, f"invisible-watermark {LIBRARY_METHOD}": read_library}
    large = [f.resize((512, 512), Image.BICUBIC) for f in faces[: args.n_large]]
    robustness(faces[: args.n], ours)
    robustness(large, both)
    false_positives(faces[: args.n_unmarked], ours)
    false_positives(large, both)


if __name__ == "__main__":
    main()
