"""Fault injection: training, evaluation and dataset writing killed at seeded random moments (SIGKILL, and
once each SIGTERM and SIGINT) and run again must end exactly where an uninterrupted run ends, and never
leave an unreadable checkpoint, image or dataset file behind."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from facemogle.data.synthface import write_synthface

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SURVIVED = {"train": 0, "eval": 0, "data synth": 0}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "facemogle.cli", *map(str, args)]


def _run_killed(command: list[str], started, rng: random.Random, sig: int) -> int | None:
    """Start the command; once started() holds (it is doing the work), wait a random moment, send `sig`.
    Returns the exit code, or None when the command finished before the signal."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and not started() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))
    if process.poll() is not None:
        return None
    process.send_signal(sig)
    return process.wait(timeout=300)


def _count(folder, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def _last_step(run) -> int:
    checkpoints = sorted((run / "checkpoints").glob("step_*.pt")) if (run / "checkpoints").is_dir() else []
    return int(checkpoints[-1].stem.split("_")[1]) if checkpoints else 0


def _checkpoints_readable(run) -> list:
    states = []
    for path in sorted((run / "checkpoints").glob("step_*.pt")):
        states.append(torch.load(path, map_location="cpu", weights_only=True))  # never half a file
    return states


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthface(tmp_path_factory.mktemp("faults") / "sf", 40, size=32, progress=False)


def test_training_killed_at_random_moments_ends_bit_for_bit_where_an_uninterrupted_run_ends(data, tmp_path):
    steps = 40
    train = ["train", "--data", data, "--size", "tiny", "--resolution", 32, "--batch-size", 4, "--steps", steps,
             "--warmup", 50, "--checkpoint-every", 1, "--keep-checkpoints", 2, "--sample-every", 0, "--log-every", 1,
             "--mixed-precision", "no"]  # fmt: skip
    subprocess.run(
        _cli(*train, "--out", tmp_path / "reference"), env=ENV, check=True, capture_output=True, timeout=600
    )
    reference = _checkpoints_readable(tmp_path / "reference")[-1]
    run = tmp_path / "interrupted"
    rng = random.Random(0)
    signals = [signal.SIGTERM, signal.SIGINT] + [signal.SIGKILL] * 6
    for sig in signals:
        steps_before = _last_step(run)
        resume = ["--resume"] if steps_before else ["--overwrite"]
        target = steps_before + rng.randint(1, 4)  # kill a few steps into this attempt, at a random moment
        code = _run_killed(
            _cli(*train, "--out", run, *resume), lambda t=target: _last_step(run) >= t, rng, sig
        )
        _checkpoints_readable(run)
        if code is None:
            break
        SURVIVED["train"] += 1
        if sig != signal.SIGKILL:  # stopped between steps, with a checkpoint of the step it reached
            assert code != 0 and _last_step(run) > steps_before
    while not (run / "DONE").exists():
        resume = ["--resume"] if list((run / "checkpoints").glob("step_*.pt")) else ["--overwrite"]
        subprocess.run(
            _cli(*train, "--out", run, *resume), env=ENV, check=True, capture_output=True, timeout=600
        )
    final = _checkpoints_readable(run)[-1]
    assert final["step"] == reference["step"] == steps
    for part in ("model", "ema", "optimizer", "scheduler"):
        assert _same_state(final[part], reference[part]), part
    print(f"\ntraining survived {SURVIVED['train']} interruptions")
    assert SURVIVED["train"] >= 3


def test_eval_killed_mid_generation_and_rerun_gives_the_same_report(data, tmp_path):
    from facemogle.evaluators import train_evaluator

    for kind in ("parser", "classifier"):
        train_evaluator(kind, data, tmp_path / "evaluators" / kind, steps=5, batch_size=4, resolution=32)
    subprocess.run(_cli("init-model", "--out", tmp_path / "model"), env=ENV, check=True, capture_output=True)
    evaluate = ["eval", "--model", tmp_path / "model", "--data", data, "--num-items", 12, "--steps", 4,
                "--evaluators", tmp_path / "evaluators"]  # fmt: skip
    subprocess.run(
        _cli(*evaluate, "--out", tmp_path / "reference"),
        env=ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )
    rng = random.Random(1)
    killed = tmp_path / "killed"
    for _ in range(4):
        before = _count(killed, "*/*.png")
        started = lambda b=before: _count(killed, "*/*.png") > b  # noqa: E731 - generating
        if _run_killed(_cli(*evaluate, "--out", killed), started, rng, signal.SIGKILL) is None:
            break
        for png in killed.rglob("*.png"):
            Image.open(png).load()  # whole images only
        SURVIVED["eval"] += 1
    subprocess.run(
        _cli(*evaluate, "--out", tmp_path / "killed"), env=ENV, check=True, capture_output=True, timeout=600
    )
    reference = json.loads((tmp_path / "reference" / "report.json").read_text())
    rerun = json.loads((killed / "report.json").read_text())
    assert rerun["modes"] == reference["modes"]
    print(f"\neval survived {SURVIVED['eval']} kills")
    assert SURVIVED["eval"] >= 2


def _digest(root) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_data_synth_killed_and_rerun_gives_a_complete_valid_dataset(tmp_path):
    from facemogle.data.folders import FaceMaskTextDataset

    synth = ["data", "synth", "--count", 600, "--size", 32]
    subprocess.run(
        _cli(*synth[:2], tmp_path / "reference", *synth[2:]), env=ENV, check=True, capture_output=True
    )
    rng = random.Random(2)
    out = tmp_path / "killed"
    for _ in range(3):
        threshold = rng.randint(5, 300)
        started = lambda t=threshold: _count(out / "face", "*") >= t  # noqa: E731 - writing faces
        if (
            _run_killed(_cli(*synth[:2], out, *synth[2:], "--overwrite"), started, rng, signal.SIGKILL)
            is None
        ):
            continue
        SURVIVED["data synth"] += 1
    subprocess.run(_cli(*synth[:2], out, *synth[2:], "--overwrite"), env=ENV, check=True, capture_output=True)
    assert _digest(out) == _digest(tmp_path / "reference")
    dataset = FaceMaskTextDataset(out, "all", resolution=32)  # validates every file
    assert len(dataset) == 600 and np.asarray(dataset[599]["labels"]).shape == (32, 32)
    assert SURVIVED["data synth"] >= 1
    print(f"\ndata synth survived {SURVIVED['data synth']} kills; in all: {SURVIVED}")
