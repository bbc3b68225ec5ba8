"""SynthFace editing pairs: one change, identical pixels elsewhere; the dataset generator unchanged."""

from importlib import resources

import numpy as np
import pytest
import torch

from facemogle.data.pairs import EDIT_TYPES, make_pair
from facemogle.data.synthface import describe, make_face, parse_caption
from facemogle.labels import CLASSES, load_mask

# The classes the change of each type may touch (in A or B: lenses tint the eyes, hair colours the brows);
# every changed pixel lies within 2 px of them (a pixel's colour averages 2×2 sub-pixels, its label is one).
TOUCHES = {
    "eyeglasses": ("eyeglasses", "left eye", "right eye"), "hat": ("hat",), "hair_color": ("hair", "left brow", "right brow"),
    "hair_length": ("hair",), "bangs": ("hair",), "smiling": ("mouth", "upper lip", "lower lip"),
    "lipstick": ("upper lip", "lower lip"),
}  # fmt: skip


def _near(region: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(region.astype(np.float32))[None, None]
    return torch.nn.functional.max_pool2d(x, 5, 1, 2)[0, 0].numpy() > 0


@pytest.mark.parametrize("edit_type", EDIT_TYPES)
def test_a_pair_differs_in_one_attribute_and_only_where_it_shows(edit_type):
    for index in range(6):
        pair = make_pair(index, edit_type)
        a, b = np.asarray(pair.source).astype(int), np.asarray(pair.target).astype(int)
        changed = (np.abs(a - b).max(-1) > 0) | (pair.source_labels != pair.target_labels)
        assert changed.any(), (edit_type, index)
        ids = [CLASSES.index(c) for c in TOUCHES[edit_type]]
        part = np.isin(pair.source_labels, ids) | np.isin(pair.target_labels, ids)
        assert not (changed & ~_near(part)).any(), (edit_type, index)
        differing = {
            k for k in pair.source_attributes if pair.source_attributes[k] != pair.target_attributes[k]
        }
        assert pair.attribute in differing and pair.target_attributes[pair.attribute] == pair.value
        assert differing <= {pair.attribute, "mouth", "smiling"}
        assert (pair.instruction is None) == (edit_type in ("eyeglasses", "hat") and index % 2 == 1)
        assert parse_caption(describe(pair.target_attributes)).get(pair.attribute, False) == pair.value
    again = make_pair(5, edit_type)
    assert np.array_equal(np.asarray(again.target), np.asarray(pair.target))  # deterministic


def test_the_dataset_generator_is_unchanged():
    """The shipped example masks are the generator's output at 128²: they pin it (the README numbers, the
    evaluators' training data and the example masks depend on it); its 64² output, which trained the
    shipped evaluators and v1, is pinned by the hashes of v1's example masks."""
    import hashlib

    folder = resources.files("facemogle") / "assets" / "examples"
    v1 = {
        27001: "b806b1f25600f144",
        27002: "e8cab4096bfd08d3",
        27009: "3a32d9082aec51a2",
        27010: "a59f8aee52aaccbd",
    }
    for index, digest in v1.items():
        np.testing.assert_array_equal(
            make_face(index, size=128)[1], load_mask(folder / f"synthface_{index}.png")
        )
        assert hashlib.sha256(make_face(index)[1].tobytes()).hexdigest()[:16] == digest
