import io

import numpy as np
import pytest
import torch
from PIL import Image

from facemogle.labels import (
    NUM_CLASSES,
    PALETTE,
    MaskError,
    colorize,
    load_mask,
    resize_labels,
    save_mask,
    split_mask,
)


def toy_labels(h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    for k in range(NUM_CLASSES):  # blocks of every class
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        labels[y : y + 6, x : x + 6] = k
    return labels


def test_palette_png_round_trip(tmp_path):
    labels = toy_labels()
    save_mask(labels, tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), labels)


def test_palette_png_with_alpha_keeps_its_indices(tmp_path):
    labels = toy_labels()
    save_mask(labels, tmp_path / "m.png")
    with_alpha = Image.open(tmp_path / "m.png").convert("PA")
    assert with_alpha.mode == "PA"  # PNG cannot store it; it reaches load_mask as a PIL image
    np.testing.assert_array_equal(load_mask(with_alpha), labels)


def test_greyscale_label_png(tmp_path):
    labels = toy_labels()
    Image.fromarray(labels, mode="L").save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), labels)
    Image.fromarray(np.repeat(labels[..., None], 3, 2)).save(tmp_path / "rgb_labels.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "rgb_labels.png"), labels)


def test_colour_mask_with_noise_and_jpeg(tmp_path):
    labels = toy_labels(64, 64)
    rgb = PALETTE[labels].astype(np.int16)
    noisy = np.clip(rgb + np.random.default_rng(1).integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    decoded, info = load_mask(noisy, return_info=True)
    np.testing.assert_array_equal(decoded, labels)
    assert info.source_format == "colors" and info.ambiguous_fraction < 0.01
    Image.fromarray(PALETTE[labels]).save(tmp_path / "m.jpg", quality=90)
    decoded = load_mask(tmp_path / "m.jpg")
    assert (decoded == labels).mean() > 0.9
    swapped = load_mask(PALETTE[labels], palette="swapped")
    assert np.all(swapped[labels == 4] == 5) and np.all(swapped[labels == 9] == 8)


def test_bytes_and_pil_inputs():
    labels = toy_labels()
    buffer = io.BytesIO()
    colorize(labels).save(buffer, format="PNG")
    np.testing.assert_array_equal(load_mask(buffer.getvalue()), labels)
    np.testing.assert_array_equal(load_mask(colorize(labels)), labels)


def test_label_out_of_range():
    labels = toy_labels()
    labels[0, 0] = 19
    with pytest.raises(MaskError, match="outside 0..18"):
        load_mask(labels)
    with pytest.raises(MaskError, match="outside 0..18"):
        load_mask(Image.fromarray(labels * 10, mode="L"))


def test_foreign_colours():
    rgb = np.full((16, 16, 3), (120, 130, 140), np.uint8)
    with pytest.raises(MaskError, match="not in the CelebAMask-HQ palette"):
        load_mask(rgb)


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MaskError, match="empty"):
        load_mask(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MaskError, match="not a readable image"):
        load_mask(tmp_path / "text.png")
    with pytest.raises(MaskError, match="does not exist"):
        load_mask(tmp_path / "missing.png")
    with pytest.raises(MaskError, match="empty"):
        load_mask(np.zeros((0, 5), np.uint8))


def test_non_square_needs_fit():
    labels = np.ones((20, 30), np.uint8)
    with pytest.raises(MaskError, match="fit='crop'"):
        load_mask(labels, size=16)
    assert load_mask(labels, size=16, fit="crop").shape == (16, 16)
    padded = load_mask(labels, size=30, fit="pad")
    assert padded.shape == (30, 30) and padded[0, 0] == 0 and padded[15, 15] == 1
    assert load_mask(labels).shape == (20, 30)


def test_resize_is_nearest():
    labels = toy_labels(64, 64)
    small = resize_labels(labels, 16)
    assert set(np.unique(small)) <= set(np.unique(labels))
    assert resize_labels(labels, 64) is labels


def test_split_mask():
    labels = toy_labels()
    maps = split_mask(labels)
    assert maps.shape == (20, 3, 32, 32)
    torch.testing.assert_close(maps[0].permute(1, 2, 0), torch.as_tensor(PALETTE[labels]).float() / 255)
    for k in range(NUM_CLASSES):
        expected = torch.as_tensor(labels == k).float()
        for channel in range(3):
            torch.testing.assert_close(maps[1 + k, channel], expected)
    batched = split_mask(torch.as_tensor(np.stack([labels, labels[::-1].copy()])))
    assert batched.shape == (2, 20, 3, 32, 32)
    torch.testing.assert_close(batched[0], maps)


def test_palette_label_maps_of_other_tools_keep_their_indices_and_drawings_are_read_by_colour(tmp_path):
    from facemogle.labels import _voc_colour

    assert [_voc_colour(i) for i in (0, 1, 2, 3, 15)] == [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (192, 128, 128),
    ]
    labels = toy_labels()
    voc = Image.fromarray(labels, mode="P")
    voc.putpalette([c for i in range(256) for c in _voc_colour(i)])  # labelme's label PNGs
    voc.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "voc.png"), labels)
    drawing = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")  # an indexed drawing
    drawing.putpalette(list(PALETTE[13]) + list(PALETTE[1]) + [0] * 762)  # index 0 = hair, 1 = skin colours
    drawing.save(tmp_path / "drawing.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "drawing.png"), [[13, 1], [1, 13]])
