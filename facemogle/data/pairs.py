"""SynthFace editing pairs: a face A and its counterfactual B with exactly one attribute changed and
identical pixels everywhere else (one random stream per face part), so an edit of A can be scored
against the true B. The dataset generator (`make_face`) is untouched: pairs use their own streams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .synthface import HAIR_COLORS, PARTS, FaceAttributes, describe, render_parts, sample_attributes

# Edit types: the attribute changed, and whether the pair is also an attribute edit (additions and
# changes; a removal is a mask edit only). Eyeglasses and hats are added on even indices, removed on odd.
EDIT_TYPES = ("eyeglasses", "hat", "hair_color", "hair_length", "bangs", "smiling", "lipstick")
PAIR_STREAM = 7  # the pairs' seed offset: their faces never coincide with the dataset's


@dataclass
class FacePair:
    edit_type: str
    source: Image.Image
    source_labels: np.ndarray
    source_attributes: dict
    target: Image.Image
    target_labels: np.ndarray
    target_attributes: dict
    instruction: str | None  # the attribute edit's prompt; None for a removal (a mask edit only)
    attribute: str  # the classifier head that states the change
    value: object  # its value in B


def make_pair(index: int, edit_type: str, seed: int = 0, size: int = 64) -> FacePair:
    """Pair `index` of an edit type: (A, B) rendered from the same part streams, B = A with one change."""
    if edit_type not in EDIT_TYPES:
        raise ValueError(f"Unknown edit type {edit_type!r}; use one of {', '.join(EDIT_TYPES)}.")
    key = [seed, PAIR_STREAM, EDIT_TYPES.index(edit_type), index]
    rng = np.random.default_rng(key)
    source, target, instruction, attribute, value = _change(sample_attributes(rng), edit_type, index, rng)

    def stream(part: str) -> np.random.Generator:  # the same fresh stream for A and B
        return np.random.default_rng([*key, 1 + PARTS.index(part)])

    image_a, labels_a = render_parts(source, stream, size)
    image_b, labels_b = render_parts(target, stream, size)
    return FacePair(edit_type, image_a, labels_a, source.to_dict(), image_b, labels_b, target.to_dict(),
                    instruction, attribute, value)  # fmt: skip


def _change(a: FaceAttributes, edit_type: str, index: int, rng) -> tuple:
    """(A, B, instruction, attribute, B's value): A adjusted so the change applies, B with the change."""
    replace = dataclasses.replace
    add = index % 2 == 0
    needs_hair = edit_type != "eyeglasses"  # hair to edit, or under the hat
    if needs_hair and (a.hair_length == "bald" or a.receding_hairline):
        a = replace(
            a, hair_length="short", hair_color="brown", hair_style="straight", receding_hairline=False
        )
    if edit_type in ("eyeglasses", "hat"):
        a = replace(a, **{edit_type: not add})
        instruction = ("add eyeglasses" if edit_type == "eyeglasses" else "add a hat") if add else None
        return a, replace(a, **{edit_type: add}), instruction, edit_type, add
    if edit_type == "hair_color":
        color = str(rng.choice([c for c in HAIR_COLORS if c != a.hair_color]))
        return a, replace(a, hair_color=color), f"make the hair {color}", "hair_color", color
    if edit_type == "hair_length":
        a = replace(a, hair_length="short", ears_visible=True)
        return a, replace(a, hair_length="long"), "make the hair long", "hair_length", "long"
    if edit_type == "bangs":
        a = replace(a, bangs=False)
        return a, replace(a, bangs=True), "add bangs", "bangs", True
    if edit_type == "smiling":
        a = replace(a, mouth="closed")
        return a, replace(a, mouth="smiling"), "make the face smiling", "smiling", True
    a = replace(a, gender="female", lipstick=False, bushy_eyebrows=False)
    return a, replace(a, lipstick=True), "add lipstick", "lipstick", True


def pair_caption(pair: FacePair) -> str:
    """B's caption in SynthFace's template (the text → face reference of the attribute)."""
    return describe(pair.target_attributes)
