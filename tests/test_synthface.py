import json
from collections import Counter

import numpy as np
import pytest

from facemogle.cli import main
from facemogle.data.synthface import (
    HAIR_COLORS,
    make_face,
    parse_caption,
    write_synthface,
)
from facemogle.labels import CLASSES, load_mask


def test_deterministic_by_seed_and_index():
    a = make_face(7, seed=3, size=64)
    b = make_face(7, seed=3, size=64)
    c = make_face(8, seed=3, size=64)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


def test_every_class_appears_with_plausible_frequency():
    presence = Counter()
    for i in range(500):
        _, labels, _, _ = make_face(i, seed=0, size=64)
        presence.update(set(np.unique(labels).tolist()))
    for k in range(len(CLASSES)):
        assert presence[k] > 0, CLASSES[k]
    for always in (0, 1, 2, 4, 5, 11, 12, 17, 18):  # background, skin, nose, eyes, lips, neck, cloth
        assert presence[always] > 450, CLASSES[always]
    for rare in (3, 14, 15, 16):  # eyeglasses, hat, earrings, necklace: some, not most
        assert 20 < presence[rare] < 250, CLASSES[rare]


def test_label_map_and_image_agree():
    checked = 0
    for i in range(80):
        image, labels, _, attrs = make_face(i, seed=1, size=128)
        rgb = np.asarray(image).astype(float)
        hair = labels == 13
        if attrs.hair_color is None or hair.sum() < 200:
            continue
        mean = rgb[hair].mean(0)
        # the hair region's mean colour is nearest its stated colour under some shading in [0.6, 1.1]
        shades = np.linspace(0.6, 1.1, 26)[:, None]
        distances = {
            name: np.linalg.norm(mean[None] - shades * np.array(c, float), axis=1).min()
            for name, c in HAIR_COLORS.items()
        }
        assert min(distances, key=distances.get) == attrs.hair_color, (i, mean, attrs.hair_color)
        checked += 1
    assert checked > 30


def test_captions_state_only_true_attributes():
    for i in range(300):
        _, _, captions, attrs = make_face(i, seed=2, size=16)
        truth = attrs.to_dict()
        for caption in captions:
            stated = parse_caption(caption)
            assert stated["gender"] == attrs.gender
            for key, value in stated.items():
                assert truth[key] == value, (caption, key, value, truth[key])


def test_written_folder_matches_layout_and_is_read_back(tmp_path):
    from facemogle.data.folders import FaceMaskTextDataset

    root = write_synthface(tmp_path / "sf", 30, seed=4, size=32, progress=False)
    assert len(list((root / "face").glob("*.jpg"))) == 30
    text = json.loads((root / "text.json").read_text())
    attributes = json.loads((root / "attributes.json").read_text())
    assert set(text) == set(attributes) == {f"{i}.jpg" for i in range(30)}
    assert (root / "text" / "3.txt").read_text().splitlines() == text["3.jpg"]
    _, labels, _, _ = make_face(3, seed=4, size=32)
    np.testing.assert_array_equal(load_mask(root / "mask" / "3.png"), labels)
    data = FaceMaskTextDataset(root, split="all", resolution=32)
    assert len(data) == 30
    item = data[3]
    assert item["caption"] in text[f"{item['stem']}.jpg"]
    # regenerating one index alone gives the same files
    write_synthface(tmp_path / "one", 1, seed=4, size=32, start=3, ext="png", progress=False)
    np.testing.assert_array_equal(load_mask(tmp_path / "one" / "mask" / "3.png"), labels)


def test_multiprocessing_matches_single_process(tmp_path):
    write_synthface(tmp_path / "a", 12, size=32, progress=False)
    write_synthface(tmp_path / "b", 12, size=32, workers=2, progress=False)
    for i in range(12):
        np.testing.assert_array_equal(
            load_mask(tmp_path / "a" / "mask" / f"{i}.png"), load_mask(tmp_path / "b" / "mask" / f"{i}.png")
        )


def test_cli_synth_and_preview(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "sf"), "--count", "10", "--size", "32"]) == 0
    assert main(["data", "preview", str(tmp_path / "sf"), "--count", "10", "--columns", "5"]) == 0
    from PIL import Image

    sheet = Image.open(tmp_path / "sf" / "preview.png")
    assert sheet.size == (5 * 96, 2 * 2 * 96)
    assert main(["data", "synth", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "size must be between" in capsys.readouterr().err
    # one folder holds one seed, size and format: adding others is refused, the folder is left as it was
    synth = ["data", "synth", str(tmp_path / "sf"), "--count", "2", "--size", "32", "--start", "10"]
    for other in (["--seed", "1"], ["--size", "64"], ["--ext", "png"]):
        assert main([*synth, *other]) == 2
        assert "holds SynthFace seed 0 at 32² (jpg)" in capsys.readouterr().err
    assert len(list((tmp_path / "sf" / "face").iterdir())) == 10
    assert main(synth) == 0
    (tmp_path / "sf" / "synthface.json").write_text("{not json")
    assert main(["data", "synth", str(tmp_path / "sf"), "--count", "2", "--size", "32", "--start", "12"]) == 2
    assert "synthface.json is not SynthFace's settings" in capsys.readouterr().err


@pytest.mark.parametrize("size", [64, 256])
def test_sizes(size):
    image, labels, _, _ = make_face(0, size=size)
    assert image.size == (size, size) and labels.shape == (size, size)
