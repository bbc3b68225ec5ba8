import numpy as np
import pytest

from facemogle.data.pairs import make_pair
from facemogle.labels import CLASSES
from facemogle.shapes import SHAPES, ShapeError, face_frame

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


def test_the_frame_follows_a_rotated_face():
    pair = make_pair(0, "eyeglasses", size=128)
    frame = face_frame(pair.source_labels)
    (u0, v0, _, _), (u1, v1, _, _) = frame.eyes
    assert abs(v0 - v1) < 0.01 and u0 < 0 < u1  # level eyes in the face frame, either side of the centre
    rotated = np.rot90(pair.source_labels).copy()  # a quarter turn: the eyes now stand one above the other
    drawn = SHAPES["eyeglasses"](rotated)
    np.testing.assert_array_equal(np.rot90(SHAPES["eyeglasses"](pair.source_labels)), drawn)


def test_a_mask_without_what_places_the_shape_is_refused():
    labels = make_pair(0, "smiling").source_labels.copy()
    labels[labels == CLASSES.index("left eye")] = CLASSES.index("skin")
    with pytest.raises(ShapeError, match="both eyes.*mask edit"):
        SHAPES["hat"](labels)
    labels = make_pair(0, "smiling").source_labels.copy()
    labels[np.isin(labels, [10, 11, 12])] = CLASSES.index("skin")
    with pytest.raises(ShapeError, match="no lips"):
        SHAPES["smiling"](labels)
