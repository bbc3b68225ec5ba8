import numpy as np
import pytest

from facemogle.data.pairs import make_pair
from facemogle.labels import CLASSES
from facemogle.shapes import SHAPES, ShapeError

# the classes each shape draws, as SynthFace's counterfactual face B shows them
DRAWN = {"eyeglasses": ["eyeglasses"], "hat": ["hat"], "bangs": ["hair"], "hair_length": ["hair"],
         "smiling": ["upper lip", "lower lip"]}  # fmt: skip


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("size", [64, 128])
def test_a_drawn_shape_matches_the_true_counterfactual(name, size):
    """On SynthFace pairs (B = A with the attribute added, rendered from the same streams) the shape drawn
    into A's mask covers B's classes (IoU ≥ 0.7, the pairs' mean) and changes where B changes (IoU ≥ 0.6)."""
    ids = [CLASSES.index(c) for c in DRAWN[name]]
    ious, changes = [], []
    for index in range(0, 16, 2):  # even indices add eyeglasses and hats
        pair = make_pair(index, name, size=size)
        drawn = SHAPES[name](pair.source_labels)
        assert drawn.dtype == pair.source_labels.dtype and drawn is not pair.source_labels
        ious.append(_iou(np.isin(drawn, ids), np.isin(pair.target_labels, ids)))
        changes.append(_iou(drawn != pair.source_labels, pair.target_labels != pair.source_labels))
    assert np.mean(ious) >= 0.7, ious
    assert np.mean(changes) >= (0.45 if name == "smiling" else 0.6), changes  # a smile moves the lips ~1 px


def test_shapes_follow_a_rotated_or_upside_down_face_and_ignore_stray_pixels():
    from PIL import Image

    labels = make_pair(0, "eyeglasses", size=128).source_labels
    glasses = SHAPES["eyeglasses"](labels) == CLASSES.index("eyeglasses")
    tilted = np.asarray(Image.fromarray(labels).rotate(10, Image.NEAREST))
    drawn = SHAPES["eyeglasses"](tilted) == CLASSES.index("eyeglasses")
    assert _iou(drawn, np.asarray(Image.fromarray(glasses).rotate(10, Image.NEAREST))) > 0.7
    hat = SHAPES["hat"](labels) == CLASSES.index("hat")
    upside_down = SHAPES["hat"](np.rot90(labels, 2).copy()) == CLASSES.index("hat")
    assert _iou(upside_down, np.rot90(hat, 2)) > 0.95  # on the forehead, not the chin
    stray = labels.copy()
    stray[120, 5] = CLASSES.index("left eye")  # one pixel of parser noise far from the eye
    assert _iou(SHAPES["eyeglasses"](stray) == CLASSES.index("eyeglasses"), glasses) > 0.95


def test_a_mask_without_what_places_the_shape_is_refused():
    labels = make_pair(0, "smiling").source_labels.copy()
    labels[labels == CLASSES.index("left eye")] = CLASSES.index("skin")
    with pytest.raises(ShapeError, match="both eyes.*mask edit"):
        SHAPES["hat"](labels)
    labels = make_pair(0, "smiling").source_labels.copy()
    labels[np.isin(labels, [10, 11, 12])] = CLASSES.index("skin")
    with pytest.raises(ShapeError, match="no lips"):
        SHAPES["smiling"](labels)
    labels = np.zeros((64, 64), np.uint8)
    labels[30, 30], labels[30, 31] = CLASSES.index("left eye"), CLASSES.index("right eye")
    with pytest.raises(ShapeError, match="less than two pixels apart"):
        SHAPES["eyeglasses"](labels)
