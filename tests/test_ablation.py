import json
import shutil
import sys

import pytest
from conftest import benchmark

from facemogle.data.synthface import write_synthface


def ablation(monkeypatch, *args):
    module = benchmark("ablation")
    monkeypatch.setattr(sys, "argv", ["ablation.py", *args])
    module.main()
    return module


def row(name, mode, metric, difference, interval):
    return {"eval": f"runs/eval_{name}", "mode": mode, f"{metric}_difference": difference,
            f"{metric}_difference_interval": interval}  # fmt: skip


def test_a_variant_trained_once_must_beat_the_largest_seed_to_seed_swing_of_the_table():
    module = benchmark("ablation")
    rows = [
        row("full_seed1", "mask", "miou", 0.001, [-0.010, 0.010]),
        row("no_gating", "mask", "miou", -0.027, [-0.039, -0.016]),
        row("no_gating_seed1", "mask", "miou", 0.067, [0.057, 0.078]),  # swing 0.094
        row("global_only", "mask", "miou", 0.030, [0.020, 0.040]),
        row("global_only_seed1", "mask", "miou", 0.040, [0.030, 0.050]),  # both seeds above full's 0.001
        row("static_gate", "mask", "miou", 0.090, [0.080, 0.100]),  # inside the 0.094 swing
        row("local_only", "mask", "miou", -0.120, [-0.130, -0.110]),  # beyond it
    ]
    table = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in
             module.verdicts(rows, 2500, 200).splitlines() if line.startswith("| ") and "mask miou" in line}  # fmt: skip
    assert table["no_gating"][-2:] == ["0.001 (full)", "no difference shown |"]
    assert table["global_only"][-2:] == ["0.001 (full)", "better than full |"]
    assert table["static_gate"][-2:] == ["0.094 (no_gating)", "no difference shown |"]
    assert table["local_only"][-2:] == ["0.094 (no_gating)", "worse than full |"]
    alone = module.verdicts([row("static_gate", "mask", "miou", 0.3, [0.2, 0.4])], 2500, 200)
    assert "| – | no verdict: no seed-to-seed floor" in alone  # never judged by its interval alone


@pytest.mark.slow
def test_the_ablation_script_trains_evaluates_compares_and_resumes(tmp_path, monkeypatch):
    data = write_synthface(tmp_path / "sf", 40, size=32, progress=False)
    config = tmp_path / "ablation.yaml"
    config.write_text(f"data: {data}\nsize: tiny\nresolution: 32\nbatch_size: 2\nsteps: 2\nwarmup: 1\n"
                      "checkpoint_every: 1\nsample_every: 0\nmixed_precision: 'no'\n")  # fmt: skip
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = [
        "--config",
        str(config),
        "--runs",
        str(runs),
        "--results",
        str(results),
        "--n",
        "4",
        "--only",
        "full",
        "local_only",
        "unconditional",
    ]
    module = ablation(monkeypatch, *args)
    assert set(module.VARIANTS) >= {"full", "no_gating", "static_gate", "scalar_gate", "global_only", "local_only",
                                    "no_experts_no_gate", "unconditional"}  # fmt: skip
    folders = ["full", "full_seed1", "local_only", "unconditional"]
    assert all((runs / name / "DONE").exists() for name in folders)
    table = (runs / "compare.md").read_text()
    assert all(str(runs / f"eval_{name}") in table for name in folders) and (runs / "samples.png").is_file()
    kept = results / "eval_local_only"  # without the generated images: the first ones, for the grid
    kept_files = {"report.json", "per_item.npz", "report.md", "made_for.json", "mask", "both"}
    assert {p.name for p in kept.iterdir()} == kept_files
    n = json.loads((kept / "report.json").read_text())["n"]  # < 8
    assert len(list((kept / "mask").glob("*.png"))) == n and (kept / "mask" / "generation.json").is_file()
    weights = {name: (runs / name / "model" / "model.safetensors").stat().st_mtime_ns for name in folders}
    (runs / "full_seed1" / "DONE").unlink()  # as if interrupted after its last checkpoint
    shutil.rmtree(results / "eval_full_seed1")
    ablation(monkeypatch, *args)
    assert all((runs / name / "model" / "model.safetensors").stat().st_mtime_ns == weights[name]
               for name in folders if name != "full_seed1")  # fmt: skip
    assert (runs / "full_seed1" / "DONE").exists()
    table = (runs / "compare.md").read_text()
    assert "| local_only | mask miou |" in table and "| local_only | both accuracy |" in table
    assert "Every run 2 steps" in table
    with pytest.raises(SystemExit, match="made for other settings: .*steps 2 \\(asked: 3\\)"):
        ablation(monkeypatch, *args, "--steps", "3")  # another budget is never mixed into the table
    with pytest.raises(SystemExit, match="was trained for 2 steps"):
        ablation(monkeypatch, *args, "--steps", "3", "--results", str(tmp_path / "other"))
    shutil.rmtree(runs)  # a later session: its run folders are new, the kept evaluations are restored
    ablation(monkeypatch, *args)
    assert not any((runs / name).exists() for name in folders)  # nothing trained again
    assert table == (runs / "compare.md").read_text() and (runs / "samples.png").is_file()
    (runs / "scalar_gate" / "checkpoints").mkdir(parents=True)  # killed while writing its first checkpoint
    (runs / "scalar_gate" / "train_config.json").write_text("{}")
    (runs / "scalar_gate" / "checkpoints" / ".step_0000001.pt.123.tmp").write_bytes(b"partial")
    ablation(monkeypatch, *args[:-3], "full", "scalar_gate")
    assert (runs / "scalar_gate" / "DONE").exists()  # started again, not resumed from the partial file
    (runs / "compare.md").unlink()
    # one variant: compared with full MoGLE and the other kept evaluations, restored, not trained
    ablation(monkeypatch, *args[:-3], "scalar_gate")
    table = (runs / "compare.md").read_text()
    assert all(str(runs / f"eval_{name}") in table for name in [*folders, "scalar_gate"])
    assert "| scalar_gate | both miou |" in table and "(full)" in table
    assert not (runs / "local_only").exists()
