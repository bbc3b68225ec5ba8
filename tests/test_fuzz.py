"""Bad-input fuzzing: malformed masks, prompts, model folders and data folders through the Python API, the
CLI and the demo's handlers. Each must give a clear error naming the problem — never a traceback, never a
hang — and write nothing outside the output path."""

import io
import json
import signal
import struct
import zlib

import numpy as np
import pytest
from conftest import face_like_labels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facemogle.cli import main
from facemogle.demo import SOURCES, DemoInputError, read_upload, run
from facemogle.labels import MaskError, load_mask
from facemogle.pipeline import CheckpointError, FaceMoGLEPipeline

TRIED = {"masks": 0, "faces to edit or parse": 0, "prompts": 0, "model folders": 0, "data folders": 0}


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width × height pixels (a decompression bomb), with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _eps() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="EPS")
    return buffer.getvalue()


def bad_masks() -> dict[str, bytes]:
    """Malformed mask files, by what is wrong with them."""
    good = _png(face_like_labels(32), "L")
    labels16 = (face_like_labels(32).astype(np.uint16) * 1000).astype(np.uint16)
    foreign = np.zeros((32, 32, 3), np.uint8)
    foreign[:, :16] = (13, 200, 77)  # no CelebAMask-HQ colour
    palette = Image.fromarray(np.zeros((32, 32), np.uint8), mode="P")
    palette.putpalette([13, 200, 77] * 256)
    palette_bytes = io.BytesIO()
    palette.save(palette_bytes, format="PNG")
    return {
        "zero bytes": b"",
        "truncated PNG": good[: len(good) // 2],
        "header only": good[:40],
        "text file": b"this is not an image\n",
        "random bytes": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "decompression bomb": _huge_png(100_000, 100_000),
        "huge dimensions": _huge_png(40_000, 1),
        "16-bit labels out of range": _png(labels16),
        "float TIFF": _encoded(Image.fromarray(np.ones((16, 16), np.float32), mode="F"), "TIFF"),
        "CMYK JPEG": _encoded(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG"),
        "labels out of range": _png(np.full((32, 32), 40, np.uint8), "L"),
        "palette with foreign colours": palette_bytes.getvalue(),
        "foreign RGB colours": _png(foreign),
        "EPS": _eps(),
        "RGBA in foreign colours": _encoded(Image.new("RGBA", (16, 16), (13, 200, 77, 128)), "PNG"),
    }


# The bad masks that are no PNG/JPEG/WEBP picture either (as a face to edit, the others are valid images).
UNREADABLE_IMAGES = {"zero bytes", "truncated PNG", "header only", "text file", "random bytes", "decompression bomb",
                     "huge dimensions", "float TIFF", "EPS"}  # fmt: skip


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _files(root) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


def _clear_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [
        line
        for line in stderr.replace("\r", "\n").strip().splitlines()
        if line.strip() and "warning" not in line.lower() and "it/s]" not in line and "%|" not in line
    ]  # progress bars and warnings aside
    assert lines and ": error: " in lines[0] and len(lines) <= 12, (
        stderr
    )  # a message (a list of files at most)
    return lines[0]


@pytest.fixture(autouse=True)
def never_hang():
    """Each case must answer within two minutes; a hang fails it instead of stalling the suite."""

    def hung(signum, frame):
        raise TimeoutError("a bad input made facemogle hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    FaceMoGLEPipeline.init("tiny").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", list(bad_masks()))
def test_malformed_masks_give_clear_errors_through_api_cli_and_demo(name, tiny_model, tmp_path, capsys):
    data = bad_masks()[name]
    path = tmp_path / "in" / "mask.png"
    path.parent.mkdir()
    path.write_bytes(data)
    TRIED["masks"] += 3
    with pytest.raises(MaskError) as api:
        load_mask(path)
    assert str(api.value)
    with pytest.raises((MaskError, DemoInputError)):
        read_upload(path)
    before = _files(tmp_path)
    out = tmp_path / "out" / "face.png"
    code = main(
        ["generate", "--model", str(tiny_model), "--mask", str(path), "--out", str(out), "--steps", "1"]
    )
    assert code == 2
    _clear_error(capsys.readouterr().err)
    assert _files(tmp_path) - before <= {
        out.parent.relative_to(tmp_path)
    }  # at most the (empty) output folder
    assert path.read_bytes() == data  # the input is never touched


@pytest.mark.parametrize("name", list(bad_masks()))
def test_malformed_images_and_masks_through_edit_and_parse_give_clear_errors(
    name, tiny_model, tmp_path, capsys
):
    from facemogle.edit import EditError

    data = bad_masks()[name]
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(data)
    face = tmp_path / "in" / "face.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(face)
    before = _files(tmp_path)
    out, mask_out = tmp_path / "out" / "edit.png", tmp_path / "out" / "mask.png"
    pipe = FaceMoGLEPipeline.from_pretrained(tiny_model)
    edit = ["edit", "--model", str(tiny_model), "--steps", "1", "--out", str(out), "--overwrite"]
    as_mask = [[*edit, "--image", str(face), "--mask", str(bad)],
               [*edit, "--image", str(face), "--source-mask", str(bad), "--op", "regenerate"]]  # fmt: skip
    # a file that decodes as a PNG/JPEG/WEBP picture is a valid face: it may be edited or parsed
    as_face = [
        [*edit, "--image", str(bad), "--op", "regenerate"],
        ["parse", str(bad), "--out", str(mask_out)],
    ]
    for command in as_mask + as_face:
        TRIED["faces to edit or parse"] += 1
        code = main(command)
        assert code == 2 or (command in as_face and name not in UNREADABLE_IMAGES and code == 0), command
        if code == 2:
            _clear_error(capsys.readouterr().err)
    if name in UNREADABLE_IMAGES:
        with pytest.raises(EditError, match="not a readable face image|square"):
            pipe.edit(bad, operation="regenerate", num_inference_steps=1)
        TRIED["faces to edit or parse"] += 1
    written = {path.relative_to(tmp_path) for path in (out.parent, out, mask_out)}
    assert _files(tmp_path) - before <= written  # nothing outside the outputs
    assert bad.read_bytes() == data  # the input is never touched


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=2000), flip=st.integers(min_value=0, max_value=255))
def test_corrupted_mask_bytes_never_escape_as_other_errors(cut, flip):
    good = bytearray(_png(face_like_labels(32), "L"))
    good[min(cut, len(good) - 1)] ^= flip
    data = bytes(good[: max(1, len(good) - cut // 3)])
    TRIED["masks"] += 1
    try:
        labels = load_mask(data)
    except MaskError as error:
        assert str(error)
    else:
        assert labels.ndim == 2 and labels.max() < 19  # a corruption PNG's checks let through still decodes


PROMPTS = {
    "empty": "",
    "whitespace": " \t\n  ",
    "100k characters": "she has blond hair " * 5300,
    "control characters": "she\x00 has\x07 blond\x1b[31m hair\r\n",
    "mixed scripts": "她有金色的头发 и улыбается, وهي تبتسم 😀",
    "lone surrogate": "she has \udcff hair",
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompts_either_generate_or_give_a_clear_error(name, tiny_model, tmp_path, capsys):
    prompt = PROMPTS[name]
    pipe = FaceMoGLEPipeline.from_pretrained(tiny_model)
    TRIED["prompts"] += 2
    try:
        images = pipe(prompt=prompt, num_inference_steps=1)
    except ValueError as error:
        assert any(word in str(error) for word in ("prompt", "characters", "nothing to generate"))
    else:
        assert images[0].size == (32, 32)
    try:  # the demo's handler, as the Generate button calls it (text only)
        gallery, _, _ = run(pipe, SOURCES[2], None, None, prompt, 2.0, 1.5, 1, 0, False, 1, folder=tmp_path)
    except (DemoInputError, ValueError) as error:
        assert str(error)
    else:
        assert gallery[0].size == (32, 32)
    TRIED["prompts"] += 1
    out = tmp_path / "face.png"
    before = _files(tmp_path)
    code = main(
        ["generate", "--model", str(tiny_model), "--prompt", prompt, "--out", str(out), "--steps", "1"]
    )
    if code:
        _clear_error(capsys.readouterr().err)
        assert not out.exists()
    else:
        assert Image.open(out).size == (32, 32)
    assert _files(tmp_path) - before <= {out.relative_to(tmp_path)}  # nothing but the output


def _copier(good, root, folders: dict):
    """copy(name): a fresh copy of `good` under root, recorded in folders[name]."""
    import shutil

    def copy(name):
        folders[name] = root / name.replace(" ", "_")
        shutil.copytree(good, folders[name])
        return folders[name]

    return copy


def _model_folders(good, root) -> dict:
    """Broken copies of a model folder, by what is wrong with them."""
    folders = {}
    copy = _copier(good, root, folders)

    (copy("missing weights") / "model.safetensors").unlink()
    (copy("missing config") / "config.json").unlink()
    weights = copy("corrupt safetensors") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (copy("garbage safetensors") / "model.safetensors").write_bytes(b"\xff" * 64)
    config = copy("wrong config keys") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_layerz": 3}))
    config = copy("config not JSON") / "config.json"
    config.write_text("{ not json")
    config = copy("another model's weights") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_single_layers": 3}))
    config = copy("bad sampling defaults") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sampling": {"text_only": "maybe"}}))
    folders["not a folder"] = root / "nowhere"
    return folders


def test_broken_model_folders_give_clear_errors(tiny_model, tmp_path, capsys):
    folders = _model_folders(tiny_model, tmp_path)
    before = _files(tmp_path)
    for name, folder in folders.items():
        TRIED["model folders"] += 2
        with pytest.raises(CheckpointError) as error:
            FaceMoGLEPipeline.from_pretrained(folder)
        assert str(folder.name) in str(error.value) or "config" in str(error.value), name
        code = main(
            [
                "generate",
                "--model",
                str(folder),
                "--prompt",
                "she smiles",
                "--out",
                str(tmp_path / f"{name}.png"),
            ]
        )
        assert code == 2, name
        _clear_error(capsys.readouterr().err)
        assert main(["demo", "--model", str(folder), "--port", "1"]) == 2, name  # refused before serving
        _clear_error(capsys.readouterr().err)
        TRIED["model folders"] += 1
    assert _files(tmp_path) == before  # no output, and the broken folders as they were


def _data_folders(root) -> dict:
    from facemogle.data.synthface import write_synthface

    good = write_synthface(root / "good", 6, size=32, progress=False)
    folders = {}
    copy = _copier(good, root, folders)

    (copy("missing pairs") / "mask" / "0.png").unlink()
    (copy("mask not an image") / "mask" / "1.png").write_text("not a png")
    (copy("bad text.json") / "text.json").write_text("{ broken")
    (copy("text.json not a map") / "text.json").write_text("[1, 2]")
    (copy("splits.json not JSON") / "splits.json").write_text("{ nope")
    (copy("splits.json of the wrong shape") / "splits.json").write_text('[["0", "1"]]')
    bad = next((copy("truncated face") / "face").glob("2.*"))
    bad.write_bytes(bad.read_bytes()[:60])
    folders["no such folder"] = root / "missing"
    folders["empty folder"] = root / "empty"
    folders["empty folder"].mkdir()
    return folders


def test_broken_data_folders_give_clear_errors(tmp_path, capsys):
    from facemogle.data.folders import DatasetError, FaceMaskTextDataset

    folders = _data_folders(tmp_path)
    before = _files(tmp_path)
    for name, folder in folders.items():
        TRIED["data folders"] += 2
        with pytest.raises(DatasetError):
            FaceMaskTextDataset(folder, "all", resolution=32)
        code = main(["train", "--data", str(folder), "--out", str(tmp_path / "runs" / name.replace(" ", "_")),
                     "--size", "tiny", "--resolution", "32", "--steps", "1", "--sample-every", "0"])  # fmt: skip
        assert code == 2, name
        _clear_error(capsys.readouterr().err)
    written = _files(tmp_path) - before
    assert all(path.parts[0] == "runs" for path in written), (
        written
    )  # at most the run folders, under --out's parent


def test_report_the_number_of_inputs_tried():
    """Printed with -s; counts what the tests above fed in (run in file order)."""
    print(f"\nbad inputs tried: {TRIED} (total {sum(TRIED.values())})")
    assert sum(TRIED.values()) > 0
