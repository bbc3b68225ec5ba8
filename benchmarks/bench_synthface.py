"""SynthFace generation speed on one core: faces per second at several resolutions, rendering only and
rendering + writing files, measured in one run. Targets: ≥ 200 faces/s at 64², ≥ 20 faces/s at 256².

Usage: python benchmarks/bench_synthface.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from facemogle.data.synthface import make_face, write_synthface


def rate(fn, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    targets = {64: 200, 256: 20}
    print("| resolution | render faces/s | render + write faces/s | target | met |")
    print("|---|---|---|---|---|")
    for size in (64, 128, 256, 512):
        render = rate(lambda i, s=size: make_face(i, 0, s), args.seconds)
        with tempfile.TemporaryDirectory() as folder:
            count = max(1, int(render * args.seconds / 2))
            start = time.perf_counter()
            write_synthface(folder, count, size=size, progress=False)
            written = count / (time.perf_counter() - start)
        target = targets.get(size)
        met = "–" if target is None else ("yes" if written >= target else "no")
        print(f"| {size}² | {render:.1f} | {written:.1f} | {target or '–'} | {met} |")


if __name__ == "__main__":
    main()
