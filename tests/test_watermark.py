import io

import numpy as np
import pytest
from PIL import Image

from facemogle.data.synthface import make_face
from facemogle.watermark import BITS, PAYLOAD, WatermarkError, mark, patterns, read


@pytest.fixture(scope="module")
def faces():
    return [make_face(i, size=128)[0] for i in range(12)]


def _jpeg(image, quality=75):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_the_payload_survives_jpeg_and_resizing_and_is_invisible(faces):
    for face in faces:
        before = np.asarray(face).copy()
        marked = mark(face)
        assert np.array_equal(np.asarray(face), before)  # the input is not changed
        error = np.asarray(marked, float) - before
        assert 10 * np.log10(255**2 / (error**2).mean()) > 34  # PSNR (≈ 36–40 dB on SynthFace faces)
        w, h = marked.size
        twice = marked.resize((w // 2, h // 2), Image.BICUBIC).resize((w, h), Image.BICUBIC)
        for attacked in (
            marked,
            _jpeg(marked),
            twice,
            _jpeg(twice),
            marked.resize((512, 512), Image.BICUBIC),
        ):
            reading = read(attacked)
            assert reading.marked and reading.bit_accuracy >= 28 / 32
        assert np.array_equal(read(marked).bits, PAYLOAD)
    big = mark(faces[0].resize((512, 512), Image.BICUBIC))  # full-scale outputs carry it too
    assert read(big).bit_accuracy == 1 and read(big.resize((128, 128), Image.BOX)).marked


def test_unmarked_and_heavily_cropped_faces_read_as_unmarked_not_as_a_false_payload(faces):
    for face in faces:
        assert not read(face).marked and read(face).false_positive_rate > 1e-4
        cropped = mark(face).crop((16, 16, 144, 144)).resize((128, 128))  # a crop shifts the grid
        assert not read(cropped).marked
    assert read(mark(faces[0])).false_positive_rate < 1e-9  # all 32 bits: 2^-32


def test_patterns_are_orthonormal_and_fixed():
    p = patterns().reshape(BITS, -1)
    np.testing.assert_allclose(p @ p.T / p.shape[1], np.eye(BITS), atol=1e-10)
    assert patterns() is patterns()


def test_bad_images_get_a_clear_error():
    with pytest.raises(WatermarkError, match="too small"):
        mark(Image.new("RGB", (64, 64)))
    with pytest.raises(WatermarkError, match="too small"):
        read(Image.new("RGB", (200, 100)))
    with pytest.raises(WatermarkError, match="PIL image"):
        read(np.zeros((128, 128, 3)))
