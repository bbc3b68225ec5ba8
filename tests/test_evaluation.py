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
    assert "2 Euler steps, text guidance 4, mask guidance 1.5," in (tmp_path / "ev" / "report.md").read_text()
    grid = report["modes"]["mask"]["patch_grid"]  # on the model's 32² images: patch sizes 2–16
    assert set(grid["by_patch"]) == {str(p) for p in range(2, 17)} and grid["worst"] == max(
        grid["by_patch"].values()
    )
    assert f"{grid['worst']:.3f} @{grid['worst_patch']}" in (tmp_path / "ev" / "report.md").read_text()
    assert report["reference"]["patch_grid"]["worst"] > 0
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
    assert rows[0].endswith("| +0.0 [+0.0, +0.0] |")  # Fréchet's paired interval: the same images, no change
    assert main(["eval", "--images", str(tmp_path / "ev" / "both"), "--data", str(data), "--n", "8", "--mode", "both",
                 "--seed", "1", "--out", str(tmp_path / "ev5"), "--evaluators", str(evaluators)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "ev"), str(tmp_path / "ev5")]) == 2
    assert "seed 1 vs 0" in capsys.readouterr().err  # other noise: not paired
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


def _flat(tree, prefix=""):
    """A nested report as {path: number}; other leaves must be equal as text."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in _flat(value, f"{prefix}/{i}").items()}
    return {prefix: tree if isinstance(tree, (int, float)) else str(tree)}


def test_eval_on_two_processes_gives_the_report_of_one(data, evaluators, tmp_path):
    from conftest import one_thread, torchrun

    assert main(["init-model", "--out", str(tmp_path / "model")]) == 0
    common = ["--model", str(tmp_path / "model"), "--data", str(data), "--num-items", "5", "--steps", "2",
              "--evaluators", str(evaluators), "--mode", "mask", "both"]  # fmt: skip
    with one_thread():
        assert main(["eval", *common, "--out", str(tmp_path / "one")]) == 0
    result = torchrun("-m", "facemogle.cli", "eval", *common, "--out", str(tmp_path / "two"))
    assert result.returncode == 0, result.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert _flat(one["modes"]) == pytest.approx(
        _flat(two["modes"]), rel=1e-6
    )  # Fréchet: ~1e-12 noise
    assert one["n"] == two["n"] == 5
    for mode in ("mask", "both"):
        for path in (tmp_path / "one" / mode).glob("*.png"):
            assert np.array_equal(
                np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "two" / mode / path.name))
            )
    assert not list((tmp_path / "two").glob("FAILED_rank*"))


def test_eval_never_reuses_images_of_other_data_splits_or_weights(data, evaluators, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["init-model", "--out", str(model), "--seed", "0"]) == 0
    args = ["eval", "--model", str(model), "--data", str(data), "--n", "3", "--steps", "2", "--mode", "mask",
            "--out", str(tmp_path / "ev"), "--evaluators", str(evaluators)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--split", "train"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert (
        main(["init-model", "--out", str(model), "--seed", "1", "--overwrite"]) == 0
    )  # retrained at the same path
    capsys.readouterr()
    assert main(args) == 2
    assert "other settings" in capsys.readouterr().err


def test_eval_images_of_several_modes_need_one_folder_per_mode(data, evaluators, tmp_path, capsys):
    flat = [
        "eval",
        "--images",
        str(data / "face"),
        "--data",
        str(data),
        "--n",
        "3",
        "--evaluators",
        str(evaluators),
    ]
    assert main([*flat, "--out", str(tmp_path / "a")]) == 2
    assert "pass --mode with the one mode" in capsys.readouterr().err
    for mode in ("mask", "text", "both"):
        (tmp_path / "per_mode" / mode).mkdir(parents=True)
        for path in sorted((data / "face").iterdir())[:40]:
            (tmp_path / "per_mode" / mode / path.name).write_bytes(path.read_bytes())
    per_mode = ["eval", "--images", str(tmp_path / "per_mode"), *flat[3:], "--out", str(tmp_path / "b")]
    assert main(per_mode) == 0
    assert set(json.loads((tmp_path / "b" / "report.json").read_text())["modes"]) == {"mask", "text", "both"}


def test_processes_launched_without_a_gpu_each_see_their_rank(tmp_path):
    """torchrun on CPUs: each process is one of two (accelerate needs cpu=True there; without it each
    process was a world of one, made every image, and the 2-process report still matched)."""
    from conftest import torchrun

    script = tmp_path / "ranks.py"
    script.write_text(
        "import os, sys\nfrom facemogle.cli import _process_state\ns = _process_state()\n"
        "open(os.path.join(sys.argv[1], f'{s.process_index}.txt'), 'w').write(str(s.num_processes))\n"
    )
    result = torchrun(str(script), str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name: p.read_text() for p in tmp_path.glob("*.txt")} == {"0.txt": "2", "1.txt": "2"}


def test_the_report_states_the_sampler_and_guidance_intervals():
    from facemogle.metrics.report import _sampling

    report = {"images": None, "steps": 12, "sampler": "heun", "text_guidance": 4.0, "mask_guidance": 1.5,
              "text_interval": [0.0, 0.8], "mask_interval": [0.0, 1.0]}  # fmt: skip
    assert _sampling(report) == "12 Heun steps, text guidance 4 (t in [0, 0.8]), mask guidance 1.5"
    assert _sampling({**report, "images": "elsewhere", "steps": None}) == "images made elsewhere"
