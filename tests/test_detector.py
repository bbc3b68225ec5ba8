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
    network = train_detector(faces[:32], fakes[:32], DetectorConfig(layers=(1, 1)), steps=60, batch_size=16,
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

    data = write_synthface(tmp_path / "sf", 60, size=128, progress=False)
    for name, offset in (("gen", 500), ("unseen", 700)):
        (tmp_path / name).mkdir()
        for i in range(12):  # stand-ins: faces rendered at half size and upscaled
            make_face(offset + i, size=64)[0].resize((128, 128), Image.NEAREST).save(
                tmp_path / name / f"{i}.png"
            )
    assert main(["train-detector", "--data", str(data), "--generated", str(tmp_path / "gen"), "--out",
                 str(tmp_path / "det"), "--n", "12", "--steps", "3"]) == 0  # fmt: skip
    assert main(["eval", "--task", "detect", "--data", str(data), "--images", str(tmp_path / "gen"), "--unseen",
                 str(tmp_path / "unseen"), "--detector", str(tmp_path / "det"), "--n", "6", "--out",
                 str(tmp_path / "ev")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert {(r["generator"], r["degradation"]) for r in report["rows"]} == {
        (g, d) for g in ("generated", "unseen generator") for d in ("none", "jpeg75", "resize2x")
    }
    assert all(0 <= r["auc"] <= 1 and r["n_real"] == 6 for r in report["rows"])
    assert "| AUC ↑ | EER ↓ | AP ↑ |" in (tmp_path / "ev" / "report.md").read_text()
    assert main(["eval", "--task", "detect", "--data", str(data), "--images", str(tmp_path / "gen"),
                 "--detector", str(tmp_path / "det"), "--n", "6", "--out", str(tmp_path / "ev")]) == 2  # fmt: skip
    assert "report.json exists" in capsys.readouterr().err  # eval never replaces a report
    capsys.readouterr()
    assert (
        main(
            [
                "detect",
                "--detector",
                str(tmp_path / "det"),
                "--threshold",
                "0.3",
                str(tmp_path / "gen" / "0.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "P(generated)" in out and "at threshold 0.3" in out
    assert main(["eval", "--task", "detect", "--data", str(data), "--images", str(tmp_path / "gen"), "--detector",
                 str(tmp_path / "sf" / "face")]) == 2  # a folder of faces is no detector  # fmt: skip
