import json

import numpy as np
import pytest
from PIL import Image

from facemogle.cli import main
from facemogle.data.synthface import write_synthface
from facemogle.evaluators import EvaluatorError, load_evaluator, train_evaluator


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthface(tmp_path_factory.mktemp("eval") / "sf", 80, size=32, progress=False)


@pytest.fixture(scope="module")
def evaluators(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluators")
    for kind in ("parser", "classifier"):
        train_evaluator(kind, data, out / kind, steps=30, batch_size=8, resolution=32)
    return out


def test_evaluators_train_save_and_load(evaluators):
    metrics = json.loads((evaluators / "parser" / "metrics.json").read_text())
    assert (
        0 <= metrics["miou"] <= 1 and metrics["pixel_accuracy"] > 0.3
    )  # background and skin are learnt first
    parser = load_evaluator("parser", evaluators / "parser")
    classifier = load_evaluator("classifier", evaluators / "classifier")
    import torch

    images = torch.zeros(2, 3, 32, 32)
    assert parser.parse(images).shape == (2, 32, 32)
    predictions = classifier.predict(images)
    assert set(predictions[0]) >= {"gender", "hair_color", "hat", "smiling"}
    with pytest.raises(EvaluatorError, match="parser"):
        load_evaluator("parser", evaluators / "classifier")
    with pytest.raises(EvaluatorError, match="train-evaluators"):
        load_evaluator("parser", evaluators / "missing")


def test_eval_cli_end_to_end_and_resumable(data, evaluators, tmp_path, capsys):
    assert main(["init-model", "--out", str(tmp_path / "model")]) == 0
    args = ["eval", "--model", str(tmp_path / "model"), "--data", str(data), "--n", "8", "--steps", "2",
            "--out", str(tmp_path / "ev"), "--evaluators", str(evaluators)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(report["modes"]) == {"mask", "text", "both"} and report["n"] == 8
    assert "miou" in report["modes"]["mask"]["mask"] and "accuracy" in report["modes"]["text"]["text"]
    assert "text" not in report["modes"]["mask"] and "mask" not in report["modes"]["text"]
    low, high = report["modes"]["both"]["mask"]["miou_interval"]
    assert low <= report["modes"]["both"]["mask"]["miou"] <= high
    assert f"[{low:.3f}, {high:.3f}]" in (tmp_path / "ev" / "report.md").read_text()
    assert (tmp_path / "ev" / "grid.png").exists()
    first = sorted(p.stat().st_mtime_ns for p in (tmp_path / "ev" / "both").iterdir())
    assert main(args) == 0  # a second run reuses the generated images
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "ev" / "both").iterdir()) == first
    # scoring images made elsewhere: the real faces score like the reference
    assert main(["eval", "--images", str(tmp_path / "ev" / "both"), "--data", str(data), "--n", "8", "--mode", "both",
                 "--out", str(tmp_path / "ev2"), "--evaluators", str(evaluators)]) == 0  # fmt: skip
    assert json.loads((tmp_path / "ev2" / "report.json").read_text())["modes"]["both"]["n"] == 8
    # compare: the same images on the same items differ by exactly nothing; other items are refused
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "ev"), str(tmp_path / "ev2"), "--out", str(tmp_path / "c.md"),
                 "--grid", str(tmp_path / "c.png")]) == 0  # fmt: skip
    # grid: mask | ev's mask, text, both | ev2's both | real; ev's own sheet: mask | mask, text, both | real
    grid = np.asarray(Image.open(tmp_path / "c.png"))
    sheet = np.asarray(Image.open(tmp_path / "ev" / "grid.png"))
    assert grid.shape[0] == sheet.shape[0] and grid.shape[1] == sheet.shape[1] * 6 // 5
    assert np.array_equal(grid[:, : sheet.shape[1] - 34], sheet[:, :-34])  # the same items, images and order
    rows = [
        line
        for line in (tmp_path / "c.md").read_text().splitlines()
        if line.startswith(f"| {tmp_path / 'ev2'}")
    ]
    assert len(rows) == 1 and "| both | " in rows[0] and rows[0].count("+0.000 [+0.000, +0.000]") == 2
    assert main(["eval", "--images", str(tmp_path / "ev" / "both"), "--data", str(data), "--n", "4", "--mode", "both",
                 "--out", str(tmp_path / "ev4"), "--evaluators", str(evaluators)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "ev"), str(tmp_path / "ev4")]) == 2
    assert "not evaluated on the same items (n 4 vs 8)" in capsys.readouterr().err
    (tmp_path / "ev4" / "per_item.npz").unlink()
    assert main(["compare", str(tmp_path / "ev"), str(tmp_path / "ev4")]) == 2
    assert "run the same `facemogle eval" in capsys.readouterr().err
    # unconditional samples (a realism baseline): Fréchet only; other settings in the same folder are refused
    assert (
        main([*args[:-4], "--mode", "none", "--out", str(tmp_path / "ev"), "--evaluators", str(evaluators)])
        == 0
    )
    none = json.loads((tmp_path / "ev" / "report.json").read_text())["modes"]["none"]
    assert "frechet" in none and "mask" not in none and "text" not in none
    assert main([*args, "--text-guidance", "3"]) == 2
