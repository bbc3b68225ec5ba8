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
