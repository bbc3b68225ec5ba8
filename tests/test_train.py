import dataclasses
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from conftest import torchrun
from safetensors.torch import load_file

from facemogle.cli import main
from facemogle.data.synthface import write_synthface
from facemogle.precision import resolve_mixed_precision
from facemogle.train import DataOrder, RunFolderError, TrainConfig, loss_curve, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthface(tmp_path_factory.mktemp("data") / "sf", 48, size=32, progress=False)


def config(data, out, **overrides):
    base = dict(data=str(data), out=str(out), size="tiny", resolution=32, batch_size=4, steps=6, warmup=2,
                checkpoint_every=100, sample_every=0, log_every=1, mixed_precision="no")  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def weights(run):
    return load_file(run / "model" / "model.safetensors")


def logged_lr(run):
    rows = (run / "log.csv").read_text().splitlines()[1:]
    return [float(row.split(",")[2]) for row in rows]


def test_resume_is_bit_exact(data, tmp_path):
    straight = train(config(data, tmp_path / "a", grad_accum=2, mixed_precision="bf16"))
    interrupted = config(data, tmp_path / "b", grad_accum=2, mixed_precision="bf16")
    train(interrupted, stop_at=3)
    assert not (tmp_path / "b" / "DONE").exists()
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step_0000003.pt"]
    train(interrupted, resume=True)
    a, b = weights(straight), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "b" / "loss.png").exists() and (tmp_path / "b" / "samples").is_dir()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_stops_after_that_step(data, tmp_path, monkeypatch, signum):
    """Ctrl-C or SIGTERM inside a step (here: mid EMA update) finishes the step, saves its checkpoint and
    stops; resuming then matches an uninterrupted run bit for bit."""
    import facemogle.train.loop as loop

    update = loop.update_ema

    def interrupted_update(ema, model, decay, step):
        if step == 2:
            os.kill(os.getpid(), signum)
        update(ema, model, decay, step)

    straight = train(config(data, tmp_path / "a", steps=3))
    cfg = config(data, tmp_path / "b", steps=3)
    handler = signal.getsignal(signum)
    monkeypatch.setattr(loop, "update_ema", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(loop, "update_ema", update)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step_0000002.pt"]
    assert signal.getsignal(signum) is handler
    train(cfg, resume=True)
    a, b = weights(straight), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_changes_weights_and_logs(data, tmp_path):
    run = train(config(data, tmp_path / "r", steps=4, sample_every=4))
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,images_per_s,elapsed_s" and len(rows) == 5
    assert json.loads((run / "train_config.json").read_text())["steps"] == 4
    assert (run / "samples" / "step_0000004.png").exists()
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.from_pretrained(run / "model")
    assert pipe(prompt="a woman", num_inference_steps=2)[0].size == (32, 32)


def test_auto_precision_patch_size_and_prediction_are_saved(data, tmp_path):
    run = train(config(data, tmp_path / "r", steps=1, mixed_precision="auto", patch_size=8, prediction="x",
                       time_shift=2.0, pixel_head=4))  # fmt: skip
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["mixed_precision"] == resolve_mixed_precision("auto", "cpu")
    assert saved["patch_size"] == 8 and saved["prediction"] == "x" and saved["time_shift"] == 2.0
    model_config = json.loads((run / "model" / "config.json").read_text())
    assert (
        model_config["patch_size"] == 8
        and model_config["prediction"] == "x"
        and model_config["pixel_head"] == 4
    )


def test_run_folder_is_protected(data, tmp_path):
    cfg = config(data, tmp_path / "r", steps=2)
    train(cfg)
    with pytest.raises(RunFolderError, match="--overwrite"):
        train(cfg)
    with pytest.raises(RunFolderError, match=r"--seed 9 \(the run's: 0\)"):
        train(config(data, tmp_path / "r", steps=4, seed=9), resume=True)
    with pytest.raises(RunFolderError, match=r"--patch-size 8 \(the run's: None\)"):
        train(config(data, tmp_path / "r", steps=4, patch_size=8), resume=True)
    with pytest.raises(RunFolderError, match="--grad-accum 2 .* --lr 0.1 .* --drop-text 0.5"):
        train(config(data, tmp_path / "r", steps=4, lr=0.1, grad_accum=2, drop_text=0.5), resume=True)
    with pytest.raises(RunFolderError, match="finished at step 2"):
        train(cfg, resume=True)
    train(config(data, tmp_path / "r", steps=3), resume=True)  # more steps on a finished run
    with pytest.raises(RunFolderError, match="not both"):
        train(cfg, resume=True, overwrite=True)
    train(cfg, overwrite=True)
    unfinished = config(data, tmp_path / "u", steps=4)
    train(unfinished, stop_at=1)
    with pytest.raises(RunFolderError, match="--resume"):
        train(unfinished)
    with pytest.raises(RunFolderError, match="no checkpoint"):
        train(config(data, tmp_path / "new"), resume=True)


def test_cli_resume_continues_with_the_saved_options(data, tmp_path, capsys):
    """--resume takes the run's train_config.json, not the CLI defaults; flags that would change the run
    are refused by name; --steps extends a run (recorded); a finished run says so."""
    run = str(tmp_path / "r")
    train(config(data, run, steps=3, lr=1e-3, grad_accum=2), stop_at=1)
    assert main(["train", "--out", run, "--resume"]) == 0
    assert (tmp_path / "r" / "DONE").read_text() == "finished at step 3\n"
    assert main(["train", "--out", run, "--resume"]) == 2
    assert "finished at step 3" in capsys.readouterr().err
    assert (
        main(["train", "--out", run, "--resume", "--steps", "5", "--lr", "0.01", "--mixed-precision", "bf16"])
        == 2
    )
    error = capsys.readouterr().err
    assert "--lr 0.01 (the run's: 0.001)" in error and "--mixed-precision bf16 (the run's: no)" in error
    assert main(["train", "--out", run, "--resume", "--steps", "4", "--lr", "0.001"]) == 0
    saved = json.loads((tmp_path / "r" / "train_config.json").read_text())
    assert (saved["steps"], saved["lr"], saved["grad_accum"], saved["data"]) == (4, 1e-3, 2, str(data))
    (tmp_path / "c.yaml").write_text(f"out: {run}\nlr: 0.5\n")  # --config only locates the run
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--resume", "--steps", "5"]) == 0
    assert json.loads((tmp_path / "r" / "train_config.json").read_text())["lr"] == 1e-3


def test_overwrite_replaces_only_a_run_folder(data, tmp_path):
    dataset = write_synthface(tmp_path / "sf", 2, size=32, progress=False)
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    for overwrite in (True, False):
        with pytest.raises(RunFolderError, match="not a training run folder"):
            train(config(data, dataset, steps=1), overwrite=overwrite)
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    run = train(config(data, tmp_path / "r", steps=1))
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"\['notes.txt'\]"):
        train(config(data, run, steps=1), overwrite=True)
    assert (run / "notes.txt").exists() and (run / "DONE").exists()
    (run / "notes.txt").unlink()
    train(config(data, run, steps=1), overwrite=True)
    (tmp_path / "empty").mkdir()
    train(config(data, tmp_path / "empty", steps=1), overwrite=True)


def test_keep_checkpoints_is_at_least_one(data, tmp_path, capsys):
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"--keep-checkpoints must be at least 1.*got {bad}"):
            TrainConfig(keep_checkpoints=bad)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--keep-checkpoints", "0"]) == 2
    assert (
        "--keep-checkpoints must be at least 1" in capsys.readouterr().err and not (tmp_path / "x").exists()
    )
    run = train(config(data, tmp_path / "r", steps=3, checkpoint_every=1, keep_checkpoints=1))
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000003.pt"]


def test_corrupt_checkpoint_gets_clear_error(data, tmp_path):
    cfg = config(data, tmp_path / "r", steps=4)
    train(cfg, stop_at=2)
    (tmp_path / "r" / "checkpoints" / "step_0000002.pt").write_bytes(b"truncated")
    with pytest.raises(RunFolderError, match="cannot be read"):
        train(cfg, resume=True)


def test_cli_flags_override_yaml(data, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(f"data: {data}\nsize: tiny\nresolution: 32\nsteps: 50\nbatch_size: 2\n")
    code = main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"), "--steps", "2",
                 "--sample-every", "0", "--mixed-precision", "no"])  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "r" / "train_config.json").read_text())
    assert saved["steps"] == 2 and saved["batch_size"] == 2
    assert TrainConfig(local_experts=False).model_config().mogle.num_experts == 1
    local_only = TrainConfig(global_expert=False).model_config().mogle
    assert local_only.num_experts == 19 and not local_only.global_expert
    with pytest.raises(ValueError, match="leave no expert"):
        TrainConfig(global_expert=False, local_experts=False).model_config()
    (tmp_path / "bad.yaml").write_text("nonsense_option: 1\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown training options" in capsys.readouterr().err


def test_data_order_is_a_permutation_per_epoch():
    order = DataOrder(10, seed=3)
    first = [pair for b in range(5) for pair in order.batch(b, 2)]
    assert sorted(i for i, _ in first) == list(range(10)) and {e for _, e in first} == {0}
    second = [pair for b in range(5, 10) for pair in order.batch(b, 2)]
    assert sorted(i for i, _ in second) == list(range(10)) and {e for _, e in second} == {1}
    assert [i for i, _ in second] != [i for i, _ in first]
    assert DataOrder(10, seed=3).batch(7, 2) == order.batch(7, 2)
    assert [e for _, e in order.batch(2, 4)] == [0, 0, 1, 1]  # a batch across an epoch boundary


def test_each_epoch_draws_its_own_captions(tmp_path, monkeypatch):
    """Every face has several captions; over 3 epochs training sees more than one of each face's."""
    import facemogle.train.loop as loop

    small = write_synthface(tmp_path / "sf", 6, size=32, progress=False)
    seen = {}

    def spy(items, device):
        for item in items:
            seen.setdefault(item["stem"], set()).add(item["caption"])
        return collate(items, device)

    collate = loop._collate
    monkeypatch.setattr(loop, "_collate", spy)
    train(config(small, tmp_path / "r", steps=5, batch_size=4))  # 20 positions: > 3 epochs of ≤ 6 items
    assert all(len(captions) > 1 for captions in seen.values())


def test_loss_curve(tmp_path):
    (tmp_path / "log.csv").write_text(
        "step,loss,lr,images_per_s,elapsed_s\n" + "".join(f"{i},{1 / i},1,1,1\n" for i in range(1, 50))
    )
    image = loss_curve(tmp_path / "log.csv")
    assert image.size == (640, 360) and len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 3


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_processes_match_one_process(tmp_path):
    """DDP over gloo with 2 processes × batch 2 reaches the weights of 1 process × batch 4, with the same
    learning rate at each step: a warm-up longer than the run counts optimizer steps, not processes. The
    12 positions of the run cover more than one epoch of the ≤ 10 training items, so a batch straddles
    two epochs (each with its own captions)."""
    data = write_synthface(tmp_path / "sf", 10, size=32, progress=False)
    common = ["--data", str(data), "--size", "tiny", "--resolution", "32", "--steps", "3", "--warmup", "50",
              "--lr", "0.05", "--log-every", "1", "--sample-every", "0", "--mixed-precision", "no"]  # fmt: skip
    train(config(data, tmp_path / "one", steps=3, warmup=50, lr=0.05))
    result = torchrun(
        "-m", "facemogle.cli", "train", "--out", str(tmp_path / "two"), "--batch-size", "2", *common
    )
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4
    assert (
        logged_lr(tmp_path / "two")
        == logged_lr(tmp_path / "one")
        == pytest.approx([0.05 * (s + 1) / 50 for s in (1, 2, 3)])
    )
    # and a different global batch would not have matched
    train(config(data, tmp_path / "other", steps=3, warmup=50, lr=0.05, batch_size=2))
    other = weights(tmp_path / "other")
    assert max((one[k] - other[k]).abs().max().item() for k in one) > 1e-3


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_every_process_stops_on_a_run_folder_it_cannot_use(data, tmp_path):
    """The main process checks the run folder; the others learn its verdict instead of waiting at a barrier
    (or being killed without the reason)."""
    train(config(data, tmp_path / "r", steps=1))  # a finished run, and no --overwrite
    result = torchrun(
        "-m", "facemogle.cli", "train", "--data", str(data), "--out", str(tmp_path / "r"), "--size", "tiny",
        "--resolution", "32", "--batch-size", "2", "--steps", "1", "--sample-every", "0", "--mixed-precision", "no",
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("error: " + str(tmp_path / "r") + " holds a finished run") == 2, result.stderr[
        -3000:
    ]


def test_export_from_unfinished_run(data, tmp_path, capsys):
    cfg = config(data, tmp_path / "r", steps=6)
    train(cfg, stop_at=2)
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m"), "--dtype", "bfloat16"]) == 0
    assert "EMA weights of step 2" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m"), "--dtype", "bfloat16"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "r" / "model"), "--overwrite"]) == 2
    assert "is inside the input" in capsys.readouterr().err
    exported = load_file(tmp_path / "m" / "model.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in exported.values())
    ema = torch.load(tmp_path / "r" / "checkpoints" / "step_0000002.pt", weights_only=True)["ema"]
    assert all(torch.equal(exported[k], ema[k].bfloat16()) for k in exported)
    from facemogle.pipeline import FaceMoGLEPipeline

    assert FaceMoGLEPipeline.from_pretrained(tmp_path / "m")(prompt="a man", num_inference_steps=2)[
        0
    ].size == (32, 32)
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2")]) == 2


def test_a_run_stopped_after_its_last_checkpoint_is_finished_by_resume(data, tmp_path):
    """Killed while writing the final model (the last checkpoint is on disk, DONE is not): --resume writes it."""
    run = tmp_path / "r"
    train(config(data, run, steps=3, warmup=1))
    shutil.rmtree(run / "model")
    (run / "DONE").unlink()
    train(config(data, run, steps=3, warmup=1), resume=True)
    assert (run / "DONE").exists() and (run / "model" / "model.safetensors").is_file()


def test_resume_on_another_number_of_processes_is_refused(data, tmp_path):
    run = tmp_path / "r"
    train(config(data, run, steps=4, warmup=1), stop_at=2)
    checkpoint = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(checkpoint, weights_only=True)
    assert state["processes"] == 1
    state["processes"] = 2  # as if the run had been launched on 2 processes
    torch.save(state, checkpoint)
    with pytest.raises(RunFolderError, match="trained on 2 processes"):
        train(config(data, run, steps=4, warmup=1), resume=True)


def test_a_config_file_value_of_the_wrong_type_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("local_experts: flase\nsteps: 10\n")  # a typo YAML reads as the string "flase"
    with pytest.raises(ValueError, match="local_experts: 'flase'"):
        TrainConfig.load(path)
    path.write_text("local_experts: false\nsteps: 10\nlr: 1\n")
    loaded = TrainConfig.load(path)
    assert loaded.local_experts is False and loaded.steps == 10 and loaded.lr == 1
    path.write_text("steps: 2.5\n")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig.load(path)


def test_a_resumed_run_logs_each_step_once(data, tmp_path):
    import csv

    run = tmp_path / "r"
    train(config(data, run, steps=6, warmup=1), stop_at=3)
    with (run / "log.csv").open("a") as f:  # a run killed after step 5, its last checkpoint at 3
        f.write("4,0.5,0.001,1,1\n5,0.5,0.001,1,1\n")
    partial = run / "checkpoints" / ".step_0000006.pt.abc123.tmp"  # and killed while saving one
    partial.write_bytes(b"half a checkpoint")
    train(config(data, run, steps=6, warmup=1), resume=True)
    with (run / "log.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not partial.exists()


def test_a_run_continued_from_its_export_takes_up_its_data_order(data, tmp_path, monkeypatch):
    """--init-from + --start-step: the weights (and EMA) start as the exported ones and the run continues the
    data order and the EMA decay where the first stage stopped. With lr 0 nothing moves, so the result is the
    export itself (up to the EMA's rounding: d·w + (1 − d)·w)."""
    import facemogle.train.loop as loop

    seen, ema_steps = [], []

    def spy(items, device):
        seen.append([item["stem"] for item in items])
        return collate(items, device)

    def ema_spy(ema, model, decay, step):
        ema_steps.append(step)
        update(ema, model, decay, step)

    collate, update = loop._collate, loop.update_ema
    monkeypatch.setattr(loop, "_collate", spy)
    monkeypatch.setattr(loop, "update_ema", ema_spy)
    first = config(data, tmp_path / "a", steps=6)
    train(first, stop_at=3)
    assert main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "m")]) == 0
    train(first, resume=True)  # the first stage's own batches 3–5
    assert json.loads((tmp_path / "m" / "training.json").read_text())["step"] == 3
    still = config(data, tmp_path / "b", steps=6, lr=0.0, init_from=str(tmp_path / "m"), start_step=3)
    train(still)
    assert len(seen) == 9 and seen[6:] == seen[3:6]
    assert ema_steps == [1, 2, 3, 4, 5, 6, 4, 5, 6]
    exported, final = load_file(tmp_path / "m" / "model.safetensors"), weights(tmp_path / "b")
    assert all(torch.allclose(exported[k], final[k], rtol=1e-5, atol=1e-7) for k in exported)
    logged = (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in logged] == [4, 5, 6]
    assert json.loads((tmp_path / "b" / "model" / "training.json").read_text())["step"] == 6


def test_a_stage_resumes_bit_for_bit_without_its_init_folder(data, tmp_path):
    """--resume of a stage continues from its checkpoint: the --init-from folder is not read again."""
    train(config(data, tmp_path / "a", steps=6), stop_at=3)
    assert main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "m")]) == 0
    straight = train(config(data, tmp_path / "b", steps=6, init_from=str(tmp_path / "m"), start_step=3))
    stage = config(data, tmp_path / "c", steps=6, init_from=str(tmp_path / "m"), start_step=3)
    train(stage, stop_at=4)
    (tmp_path / "m").rename(tmp_path / "gone")
    train(stage, resume=True)
    a, b = weights(straight), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_refuses_what_does_not_fit_before_touching_the_run_folder(data, tmp_path, capsys):
    from facemogle.pipeline import FaceMoGLEPipeline

    FaceMoGLEPipeline.init("tiny", resolution=32, patch_size=8).save_pretrained(tmp_path / "other")
    with pytest.raises(RunFolderError, match="patch_size: 8 \\(the run's: 4\\)"):
        train(config(data, tmp_path / "r", init_from=str(tmp_path / "other")))
    train(config(data, tmp_path / "a", steps=6), stop_at=3)
    assert main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "m")]) == 0
    kept = train(config(data, tmp_path / "kept", steps=2))
    code = main(["train", "--data", str(data), "--out", str(kept), "--size", "tiny", "--resolution", "32",
                 "--init-from", str(tmp_path / "missing"), "--sample-every", "0", "--overwrite"])  # fmt: skip
    assert code == 2 and "is not a model folder" in capsys.readouterr().err
    assert (kept / "DONE").exists()  # --overwrite deleted nothing
    stage = dict(steps=6, init_from=str(tmp_path / "m"))
    with pytest.raises(RunFolderError, match="exported at step 3; pass --start-step 3"):
        train(config(data, tmp_path / "r2", start_step=2, **stage))
    with pytest.raises(
        RunFolderError, match="--seed 1 \\(its run's: 0\\), --batch-size 2 \\(its run's: 4\\)"
    ):
        train(config(data, tmp_path / "r2", start_step=3, batch_size=2, seed=1, **stage))
    record = json.loads((tmp_path / "m" / "training.json").read_text())
    (tmp_path / "m" / "training.json").write_text(json.dumps({**record, "processes": 2}))
    with pytest.raises(RunFolderError, match="--processes 1 \\(its run's: 2\\)"):
        train(config(data, tmp_path / "r2", start_step=3, **stage))
    (tmp_path / "m" / "training.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="training.json cannot be read"):
        train(config(data, tmp_path / "r2", start_step=3, **stage))
    with pytest.raises(ValueError, match="pass --init-from"):
        config(data, tmp_path / "r3", start_step=2)
    with pytest.raises(ValueError, match=r"--steps \(6\) must be above --start-step \(6\)"):
        config(data, tmp_path / "r3", init_from=str(tmp_path / "other"), start_step=6)
    with pytest.raises(ValueError, match="at least 0"):
        config(data, tmp_path / "r3", init_from=str(tmp_path / "other"), start_step=-1)


def test_init_from_the_shipped_folder_and_at_the_v2_configuration(tmp_path):
    """The shipped default (v2) fits a new run of its config (fine-tuning from step 0); a config.json older
    than prediction / pixel_head (v1's) fits a run of its architecture; the v2 config's bf16 export (128²,
    8-px patches, pixel head) loads into its run."""
    from facemogle.pipeline import FaceMoGLEPipeline, default_model_folder
    from facemogle.train.build import build_model
    from facemogle.train.checkpoints import check_initial_weights, load_initial_weights

    real = TrainConfig.load("configs/default128.yaml")
    check_initial_weights(dataclasses.replace(real, init_from=str(default_model_folder()), start_step=0), 1)
    FaceMoGLEPipeline.init("small").save_pretrained(tmp_path / "v1")  # 64², 4-px patches
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    old = {k: v for k, v in config.items() if k not in ("prediction", "pixel_head", "sampling")}
    (tmp_path / "v1" / "config.json").write_text(json.dumps(old))
    fine_tune = TrainConfig(size="small", resolution=64, patch_size=4, init_from=str(tmp_path / "v1"),
                            start_step=100, steps=200)  # fmt: skip
    check_initial_weights(fine_tune, 1)
    model, text_encoder = build_model(real, "cpu")
    FaceMoGLEPipeline(model, text_encoder).save_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    stage = dataclasses.replace(real, init_from=str(tmp_path / "m"))
    check_initial_weights(stage, 1)
    fresh, _ = build_model(dataclasses.replace(stage, seed=1), "cpu")
    key = "pixel_head.inner.weight"
    assert not torch.equal(fresh.state_dict()[key], model.state_dict()[key])
    load_initial_weights(fresh, stage)
    expected = {k: v.bfloat16().float() for k, v in model.state_dict().items()}
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(time_shift=0.0), "--time-shift must be positive"),
        (dict(pixel_head=-32), "--pixel-head is a number of channels"),
        (dict(backend="flux", pixel_head=32, prediction="x"), "--prediction, --pixel-head apply to"),
        (dict(backend="flux", init_from="m"), "--init-from apply to the compact"),
    ],
)
def test_options_that_cannot_apply_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)
