import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from facemogle.detector import (
    NPR_RESNET50,
    DetectorConfig,
    DetectorError,
    NPRNet,
    load_detector,
    npr_residual,
    save_detector,
)


def _faces(n=3, size=128):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_the_npr_residual_is_zero_on_2x2_blocks_and_not_on_detail():
    blocky = torch.rand(1, 3, 8, 8).repeat_interleave(2, 2).repeat_interleave(2, 3)  # [1, 3, 16, 16]
    assert npr_residual(blocky).abs().max() == 0
    assert npr_residual(torch.rand(1, 3, 16, 16)).abs().mean() > 0.1


def test_nprs_resnet50_weights_load_as_released_and_score_images(tmp_path):
    torch.manual_seed(0)
    network = NPRNet(NPR_RESNET50)
    assert network.fc1.in_features == 512 and len(network.layer1) == 3 and len(network.layer2) == 4
    torch.save(
        {f"module.{k}": v for k, v in network.state_dict().items()}, tmp_path / "NPR.pth"
    )  # DataParallel
    detector = load_detector(tmp_path / "NPR.pth")
    p = detector.probabilities(_faces())
    assert p.shape == (3,) and ((0 < p) & (p < 1)).all()
    network.eval()
    with torch.no_grad():
        expected = torch.sigmoid(network(detector.tensors(_faces()))).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-5)


def test_the_projects_detector_round_trips_through_its_folder(tmp_path):
    torch.manual_seed(0)
    network = NPRNet(DetectorConfig())
    save_detector(network, tmp_path / "detector")
    loaded = load_detector(tmp_path / "detector")
    assert loaded.config == DetectorConfig() and loaded.probabilities(_faces(2, 64)).shape == (2,)


def test_detector_files_of_another_architecture_or_no_weights_get_a_clear_error(tmp_path):
    torch.save(NPRNet(DetectorConfig()).state_dict(), tmp_path / "basic.pth")
    with pytest.raises(DetectorError, match="not NPR's ResNet-50 layout"):
        load_detector(tmp_path / "basic.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorError, match="weights_only=True"):
        load_detector(tmp_path / "junk.pth")
    with pytest.raises(DetectorError, match="does not exist"):
        load_detector(tmp_path / "missing.pth")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DetectorError, match="not a detector folder"):
        load_detector(tmp_path / "folder")


def test_a_trained_detector_separates_faces_from_their_blurred_copies_after_jpeg_and_resizing():
    """Stand-in generated faces: SynthFace faces rendered at half size and upscaled (a generator's trace)."""
    from facemogle.data.synthface import make_face
    from facemogle.detector import DEGRADATIONS, Detector, degrade, train_detector
    from facemogle.metrics.detection import roc_auc

    faces = [make_face(i, size=128)[0] for i in range(48)]
    fakes = [make_face(100 + i, size=64)[0].resize((128, 128), Image.NEAREST) for i in range(48)]
    network = train_detector(faces[:32], fakes[:32], DetectorConfig(layers=(1, 1)), steps=100, batch_size=16,
                             progress=False)  # fmt: skip
    detector = Detector(network, normalise=False)
    labels = np.r_[np.zeros(16), np.ones(16)]
    auc = {kind: roc_auc(detector.probabilities([degrade(im, kind) for im in faces[32:] + fakes[32:]]), labels)
           for kind in DEGRADATIONS}  # fmt: skip
    assert auc["none"] > 0.9 and auc["jpeg75"] > 0.9
    assert auc["resize2x"] > 0.6  # 2× down-and-up-scaling gives the real faces the same trace: harder


def test_train_detector_eval_task_detect_and_detect_on_the_command_line(tmp_path, capsys):
    import json

    from facemogle.cli import main
    from facemogle.data.synthface import make_face, write_synthface

    # real faces stored as JPEGs; seed 1, so that only the detector trained here knows them (not the shipped one)
    data = write_synthface(tmp_path / "sf", 60, seed=1, size=128, progress=False)
    for name, offset, size in (("train", 500, 128), ("held", 600, 128), ("unseen", 700, 64)):
        (tmp_path / name).mkdir()
        for i in range(12):  # stand-ins: faces rendered at half size and upscaled; "unseen" as 64² faces
            make_face(offset + i, size=size // 2)[0].resize((size, size), Image.NEAREST).save(
                tmp_path / name / f"{i}.png"
            )
    assert main(["train-detector", "--data", str(data), "--generated", str(tmp_path / "train"), "--out",
                 str(tmp_path / "det"), "--n", "12", "--steps", "3"]) == 0  # fmt: skip
    training = json.loads((tmp_path / "det" / "training.json").read_text())
    assert len(training["real"]) == 12 and len(training["generated"]) == 12
    evaluate = [
        "eval",
        "--task",
        "detect",
        "--data",
        str(data),
        "--detector",
        str(tmp_path / "det"),
        "--n",
        "6",
    ]
    assert main([*evaluate, "--images", str(tmp_path / "held"), "--unseen", str(tmp_path / "unseen"), "--out",
                 str(tmp_path / "ev")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert {(r["generator"], r["degradation"]) for r in report["rows"]} == {
        (g, d) for g in ("generated", "unseen generator") for d in ("none", "jpeg75", "resize2x")
    }
    assert report["n_real"] == {"generated": 6, "unseen generator": 6}
    assert all(r["n_real"] == r["n_generated"] == 6 and r["auc_interval"][0] <= r["auc"] <= r["auc_interval"][1]
               for r in report["rows"])  # fmt: skip
    assert all(0 <= r["fpr"] <= 1 and 0 <= r["tpr"] <= 1 and r["threshold"] == 0.5 for r in report["rows"])
    assert "| AUC ↑ | EER ↓ | AP ↑ | t | FPR ↓ | TPR ↑ |" in (tmp_path / "ev" / "report.md").read_text()
    assert main([*evaluate, "--images", str(tmp_path / "held"), "--out", str(tmp_path / "ev")]) == 2
    assert "report.json exists" in capsys.readouterr().err  # eval never replaces a report
    # faces the detector trained on are refused, as are the real faces of its training split
    assert main([*evaluate, "--images", str(tmp_path / "train"), "--out", str(tmp_path / "ev2")]) == 2
    assert "6 of the 6 generated faces are among those" in capsys.readouterr().err
    assert (
        main(
            [
                *evaluate,
                "--images",
                str(tmp_path / "held"),
                "--split",
                "train",
                "--out",
                str(tmp_path / "ev3"),
            ]
        )
        == 2
    )
    assert (
        f"6 of the 6 real faces of {data} (0…5, 6) are among those {tmp_path / 'det'} was trained on"
        in capsys.readouterr().err
    )
    # SynthFace's faces are the same wherever and at whatever size they are drawn: the training faces are
    # refused in a copy, and in a smaller set at 64² whose split puts them in its test split
    assert training["data"] == "SynthFace seed 1"
    shutil.copytree(data, tmp_path / "copy")
    small = write_synthface(tmp_path / "small", 16, seed=1, size=64, progress=False)
    (small / "splits.json").write_text(json.dumps({"train": [], "test": [str(i) for i in range(16)]}))
    for other, split in ((tmp_path / "copy", "train"), (small, "test")):
        assert main([*evaluate[:4], str(other), *evaluate[5:], "--images", str(tmp_path / "held"), "--split",
                     split, "--out", str(tmp_path / "ev4")]) == 2  # fmt: skip
        assert (
            f"are among those {tmp_path / 'det'} was trained on (SynthFace seed 1, items 0…13, 12"
            in capsys.readouterr().err
        )
    # another seed's faces at the same stems are other people: evaluated
    other_seed = write_synthface(tmp_path / "seed2", 16, seed=2, size=128, progress=False)
    (other_seed / "splits.json").write_text(json.dumps({"train": [], "test": [str(i) for i in range(16)]}))
    assert main([*evaluate[:4], str(other_seed), *evaluate[5:], "--images", str(tmp_path / "held"), "--split",
                 "test", "--out", str(tmp_path / "ev5")]) == 0  # fmt: skip
    assert main(["train-detector", "--data", str(data), "--generated", str(tmp_path / "train"), "--out",
                 str(tmp_path / "train")]) == 2  # fmt: skip
    assert "is an input" in capsys.readouterr().err
    detect = ["detect", "--detector", str(tmp_path / "det")]
    assert main([*detect, "--threshold", "0.3", str(tmp_path / "held" / "0.png")]) == 0
    out = capsys.readouterr().out
    assert "P(generated)" in out and "at threshold 0.3" in out
    assert main([*detect, "--threshold", "30", str(tmp_path / "held" / "0.png")]) == 2
    assert "not a probability" in capsys.readouterr().err
    Image.new("RGB", (32, 32)).save(tmp_path / "thumb.png")
    assert main([*detect, str(tmp_path / "thumb.png")]) == 2
    assert "judges faces of 64² and up" in capsys.readouterr().err
    assert (
        main([*evaluate, "--images", str(tmp_path / "held"), "--detector", str(tmp_path / "sf" / "face")])
        == 2
    )


def test_a_detector_saved_before_the_jpeg_re_encoding_reads_images_as_they_are(tmp_path):
    import json

    save_detector(NPRNet(DetectorConfig(layers=(1, 1))), tmp_path / "det")
    config = json.loads((tmp_path / "det" / "config.json").read_text())
    del config["jpeg_quality"]
    (tmp_path / "det" / "config.json").write_text(json.dumps(config))
    assert load_detector(tmp_path / "det").config.jpeg_quality is None


@pytest.mark.parametrize("change", [{"block": "foo"}, {"layers": [2]}, {"resolution": 127}, {"threshold": 2}])
def test_a_detector_folder_with_a_bad_config_gets_a_clear_error(tmp_path, change):
    import json

    save_detector(NPRNet(DetectorConfig(layers=(1, 1))), tmp_path / "det")
    config = json.loads((tmp_path / "det" / "config.json").read_text())
    (tmp_path / "det" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(DetectorError, match=f"not a detector folder.*{next(iter(change))}"):
        load_detector(tmp_path / "det")


def test_the_detector_reads_every_image_as_a_jpeg_so_the_file_format_is_no_cue():
    from facemogle.data.synthface import make_face
    from facemogle.detector import Detector, _jpeg

    torch.manual_seed(0)
    face = make_face(0, size=128)[0]
    detector = Detector(NPRNet(DetectorConfig(layers=(1, 1))), normalise=False)
    raw = Detector(NPRNet(DetectorConfig(layers=(1, 1), jpeg_quality=None)), normalise=False)
    read, raw_read = (
        (d.tensors([face]) - d.tensors([_jpeg(face, 95)])).abs().mean() for d in (detector, raw)
    )
    assert read < 0.3 * raw_read  # a PNG and its JPEG look nearly alike to it (≈ 5× closer than as they are)


def test_a_missing_shipped_detector_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)  # an install without assets/
    with pytest.raises(DetectorError, match="shipped detector is missing.*pass --detector"):
        load_detector()


def test_the_shipped_detector_tells_the_shipped_models_faces_from_real_ones(tmp_path, capsys):
    from facemogle.cli import main
    from facemogle.data.synthface import make_face
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.from_pretrained()
    paths = {}
    for i in range(3):  # test-split items; generated faces marked, as `generate` saves them
        make_face(27000 + i, size=128)[0].save(tmp_path / f"real{i}.jpg", quality=95)
        pipe(mask=make_face(27100 + i, size=128)[1], seed=i)[0].save(tmp_path / f"generated{i}.png")
        paths |= {tmp_path / f"real{i}.jpg": "real", tmp_path / f"generated{i}.png": "generated"}
    assert main(["detect", *map(str, paths)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    for path, truth in paths.items():
        assert lines[str(path)].split("; ")[0].endswith(f"{truth} at threshold 0.5"), lines[str(path)]


def test_the_shipped_detector_refuses_its_real_training_faces_in_any_seed_0_set(tmp_path, capsys):
    import json

    from facemogle.cli import main
    from facemogle.data.synthface import make_face, write_synthface

    # a small seed-0 set at 64² (its own split would be a hash): the shipped detector trained on train items
    # 0–1999 of the 30,000-face 128² set, the same people
    data = write_synthface(tmp_path / "sf", 8, seed=0, size=64, progress=False)
    (data / "splits.json").write_text(json.dumps({"train": [], "test": [str(i) for i in range(8)]}))
    (tmp_path / "gen").mkdir()
    for i in range(4):
        make_face(900 + i, seed=5, size=64)[0].save(tmp_path / "gen" / f"{i}.png")
    command = ["eval", "--task", "detect", "--data", str(data), "--images", str(tmp_path / "gen"), "--n", "4"]
    assert main([*command, "--out", str(tmp_path / "ev")]) == 2
    error = capsys.readouterr().err
    assert "4 of the 4 real faces" in error and "facemogle detector (shipped) was trained on" in error
    assert not (tmp_path / "ev" / "report.json").exists()


def test_a_detector_without_a_record_of_its_real_faces_is_not_evaluated_unchecked(tmp_path):
    from facemogle.detector import check_held_out, load_detector

    save_detector(NPRNet(DetectorConfig(layers=(1, 1))), tmp_path / "det", {"data": "SynthFace seed 0, 128²",
                  "split": "train", "generated": []})  # fmt: skip
    with pytest.raises(DetectorError, match="predates the record of its real training faces.*retrain it"):
        check_held_out(load_detector(tmp_path / "det"), "old", tmp_path, ["0"], {})
