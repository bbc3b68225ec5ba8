import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark
from PIL import Image

from facemogle.cli import main
from facemogle.data.synthface import write_synthface
from facemogle.metrics.report import find_image
from facemogle.watermark import read


def load():
    return benchmark("watermark_quality")


def test_marked_images_are_scored_paired_against_the_unmarked_ones(tmp_path, monkeypatch, capsys):
    data = write_synthface(tmp_path / "sf", 60, size=128, progress=False)
    n = len(list((data / "face").iterdir())) // 10  # well inside the test split
    # an "evaluation" of the real faces at 128² (the shipped 64² evaluators downsample them)
    assert main(["eval", "--images", str(data / "face"), "--data", str(data), "--n", str(n), "--mode", "mask",
                 "--out", str(tmp_path / "ev")]) == 0  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["watermark_quality.py", str(tmp_path / "ev"), "--data", str(data),
                                      "--out", str(tmp_path / "marked")])  # fmt: skip
    capsys.readouterr()
    load().main()
    out = capsys.readouterr().out
    stems = sorted(p.name for p in (tmp_path / "marked" / "images" / "mask").glob("*.png"))
    assert len(stems) == n  # the evaluation's items, no others
    for stem in stems:
        before = np.asarray(Image.open(find_image(data / "face", Path(stem).stem)), np.int16)
        after = Image.open(tmp_path / "marked" / "images" / "mask" / stem)
        assert read(after).marked and 0 < np.abs(np.asarray(after, np.int16) - before).max() < 40
    report = json.loads((tmp_path / "marked" / "eval" / "report.json").read_text())
    assert report["n"] == n and set(report["modes"]) == {"mask"}
    assert f"| {tmp_path / 'marked' / 'eval'} | mask |" in out and "Δ mIoU" in out
    assert (
        "| mask |" in out.split("run-to-run spread")[1]
        and (tmp_path / "marked" / "watermark_quality.md").is_file()
    )
    assert main(["eval", "--images", str(data / "face"), "--data", str(data), "--n", str(n - 1), "--mode", "mask",
                 "--out", str(tmp_path / "other")]) == 0  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["watermark_quality.py", str(tmp_path / "other"), "--data", str(data),
                                      "--out", str(tmp_path / "marked")])  # fmt: skip
    with pytest.raises(SystemExit, match="marked from another evaluation"):
        load().main()  # never scored with stale marked images


def test_frechet_table_puts_the_change_beside_the_spread():
    rows = [{"eval": "a", "mode": "mask", "frechet": 10.0}, {"eval": "b", "mode": "mask", "frechet": 10.5}]
    spread = {"c": {"mask": 12.0}, "d": {"mask": 7.0}}
    assert "| mask | 10.00 | 10.50 | +0.50 | +2.00, -3.00; 3.00 |" in load().frechet_table(
        rows, "a", "b", spread
    )
    assert "| mask | 10.00 | 10.50 | +0.50 | – |" in load().frechet_table(rows, "a", "b", {})
