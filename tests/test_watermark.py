import io

import numpy as np
import pytest
from PIL import Image

from facemogle.data.synthface import make_face
from facemogle.watermark import BITS, DECISION, PAYLOAD, WatermarkError, mark, patterns, read, read_library


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


def test_full_scale_outputs_also_carry_the_library_mark_and_neither_disturbs_the_other(faces):
    pytest.importorskip("imwatermark", reason="invisible-watermark: pip install 'facemogle[provenance]'")
    assert read_library(mark(faces[0])) is None  # 128²: below invisible-watermark's 256²
    for face in faces[:4]:
        large = face.resize((512, 512), Image.BICUBIC)
        marked = mark(large)
        ours, library = read(marked), read_library(marked)
        assert ours.bit_accuracy == 1 and library.bit_accuracy == 1 and library.marked
        assert read_library(_jpeg(marked)).matching >= 24  # DWT-DCT-SVD after JPEG 75: ≈ 97% of the bits
        assert not read_library(large).marked  # unmarked: not a false payload
        error = np.asarray(marked, float) - np.asarray(large, float)
        assert 10 * np.log10(255**2 / (error**2).mean()) > 34


def test_unmarked_and_heavily_cropped_faces_read_as_unmarked_not_as_a_false_payload(faces):
    for face in faces:
        assert not read(face).marked and read(face).matching < DECISION - 4
        marked = mark(face)
        shifted = marked.crop((16, 16, 144, 144)).resize((128, 128))  # the grid shifted by 16 px
        centre = marked.crop((26, 26, 102, 102)).resize((128, 128), Image.BICUBIC)  # the centre 60%, enlarged
        assert not read(shifted).marked and not read(centre).marked


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
