"""Attribute shapes drawn into a face's label map: the target mask of an attribute edit that changes a shape.

A prompt such as "add eyeglasses" cannot be made by repainting the source mask's classes (both branches of
the edit would be told the face has no glasses); the edit draws the shape into a copy of the source mask
and regenerates where the masks differ. Shapes follow SynthFace's drawing rules (data/synthface.py) in a
face frame measured on the mask itself: the eyes' centres and sizes (their line gives the roll), the skin's
width at the eyes, and the lips — so they fit any face the parser reads, SynthFace's or a photo's.
Each function returns a new label map, or raises ShapeError when the mask lacks what the shape is placed by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FaceMoGLEError

BACKGROUND, SKIN, NOSE, GLASSES, LEFT_EYE, RIGHT_EYE = 0, 1, 2, 3, 4, 5
LEFT_BROW, RIGHT_BROW, MOUTH, UPPER_LIP, LOWER_LIP, HAIR, HAT = 6, 7, 10, 11, 12, 13, 14
EYE_X = 0.17  # SynthFace's mean eye offset from the face's centre line (face units): the frame's scale
MIN_EYE_W = (
    0.07  # SynthFace's narrowest eye half width: a 1-pixel or half-hidden eye gets lenses of this size
)
SMILE_CURVE = (
    0.045  # corners this far above the centre (face units): 1.5× SynthFace's smile, which reads as one at 64²
)


class ShapeError(FaceMoGLEError, ValueError):
    """A shape that cannot be placed on this mask; the message says to draw it as a mask edit."""


@dataclass
class FaceFrame:
    """Face coordinates of every pixel: u across, v down, in SynthFace's face units (face centre 0, 0)."""

    u: np.ndarray  # [H, W]
    v: np.ndarray  # [H, W]
    eyes: list[tuple[float, float, float, float]]  # per eye (image left first): u, v, half width, half height
    face_w: float  # the skin's half width at the eyes
    face_h: float


def face_frame(labels: np.ndarray) -> FaceFrame:
    """The frame of a face's label map [H, W], from its eyes (both needed; each its largest blob, so stray
    pixels of a parser do not move it), the side of their line the nose and mouth are on, and its skin."""
    size = labels.shape[0]
    axis = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    x, y = np.meshgrid(axis, axis)
    blobs = [largest_blob(labels == c) for c in (RIGHT_EYE, LEFT_EYE)]
    if not all(b.any() for b in blobs):
        raise ShapeError(
            "The mask does not show both eyes, which this shape is placed by; draw it into the mask yourself "
            "and make a mask edit (mask=, --mask)."
        )
    (x0, y0), (x1, y1) = sorted((x[b].mean(), y[b].mean()) for b in blobs)
    if np.hypot(x1 - x0, y1 - y0) < 4 / size:
        raise ShapeError(
            "The mask's two eyes are less than two pixels apart; draw the shape and make a mask edit."
        )
    roll = np.arctan2(y1 - y0, x1 - x0)
    scale = np.hypot(x1 - x0, y1 - y0) / (2 * EYE_X)  # image units per face unit
    cos, sin = np.cos(roll), np.sin(roll)
    dx, dy = x - (x0 + x1) / 2, y - (y0 + y1) / 2
    u, v = (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale
    below = np.isin(labels, (NOSE, MOUTH, UPPER_LIP, LOWER_LIP))
    if below.any() and v[below].mean() < 0:  # nose and mouth above the eyes: the face is upside down
        u, v = -u, -v
    eye_v = 0.05  # SynthFace's eyes sit ≈ 0.05 above the face's centre: move the origin there
    v = v - eye_v
    eyes = []
    for blob in blobs:
        eu, ev = u[blob], v[blob]
        half_w = max((eu.max() - eu.min()) / 2 + 1 / size / scale, MIN_EYE_W)
        eyes.append((eu.mean(), ev.mean(), half_w, (ev.max() - ev.min()) / 2 + 1 / size / scale))
    eyes.sort()
    row = np.abs(v + eye_v) < 2 / size / scale
    skin = (labels == SKIN) & row
    face_w = np.abs(u[skin]).max() if skin.any() else 0.42
    return FaceFrame(u, v, eyes, face_w, face_w * 1.3)


def largest_blob(region: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean map (all False for an empty one)."""
    labels = np.zeros(region.shape, np.int32)
    best, best_size, current = 0, 0, 0
    for start in zip(*np.nonzero(region)):
        if labels[start]:
            continue
        current += 1
        labels[start], stack, count = current, [start], 0
        while stack:
            r, c = stack.pop()
            count += 1
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                inside = 0 <= nr < region.shape[0] and 0 <= nc < region.shape[1]
                if inside and region[nr, nc] and not labels[nr, nc]:
                    labels[nr, nc] = current
                    stack.append((nr, nc))
        if count > best_size:
            best, best_size = current, count
    return labels == best if best else np.zeros(region.shape, bool)


def shows(labels: np.ndarray, name: str) -> bool:
    """Whether a mask already shows an attribute that has a class of its own (eyeglasses, a hat)."""
    label = {"eyeglasses": GLASSES, "hat": HAT}.get(name)
    return label is not None and bool((labels == label).any())


def _ellipse(f: FaceFrame, cu, cv, au, av) -> np.ndarray:
    return ((f.u - cu) / au) ** 2 + ((f.v - cv) / av) ** 2


def add_eyeglasses(labels: np.ndarray) -> np.ndarray:
    """Frames and lenses around both eyes and a bridge (SynthFace's `_glasses`); the eyes keep their labels."""
    f, out = face_frame(labels), labels.copy()
    glasses = np.zeros(labels.shape, bool)
    for cu, cv, w, h in f.eyes:
        rx, ry = w * 1.45, max(h * 2.2, 0.06)
        glasses |= _ellipse(f, cu, cv, rx, ry) < 1.35
    (u0, v0, w0, h0), (u1, v1, _, _) = f.eyes
    rx, ry = w0 * 1.45, max(h0 * 2.2, 0.06)
    middle = (u0 + u1) / 2
    glasses |= (np.abs(f.u - middle) < (u1 - u0) / 2 - rx * 0.9) & (
        np.abs(f.v - (v0 + v1) / 2 + ry * 0.3) < 0.01
    )
    out[glasses & ~np.isin(labels, (LEFT_EYE, RIGHT_EYE))] = GLASSES
    return out


def add_hat(labels: np.ndarray) -> np.ndarray:
    """A crown over the head and a brim across the forehead (SynthFace's `_hat`, its mean sizes)."""
    f, out = face_frame(labels), labels.copy()
    brim_v = -f.face_h * 0.62
    crown = (_ellipse(f, 0, brim_v, f.face_w * 1.15, 0.4) < 1) & (f.v < brim_v)
    brim = _ellipse(f, 0, brim_v, f.face_w * 1.45, 0.045) < 1
    out[crown | brim] = HAT
    return out


def add_bangs(labels: np.ndarray) -> np.ndarray:
    """Hair over the forehead down to 0.1 above the eyes (SynthFace's bangs hairline)."""
    f, out = face_frame(labels), labels.copy()
    eye_top = min(cv - h for _, cv, _, h in f.eyes)
    face = (f.u / f.face_w) ** 2 + (f.v / f.face_h) ** 2 < 1
    out[face & (f.v < eye_top - 0.1) & (labels == SKIN)] = HAIR
    return out


def make_hair_long(labels: np.ndarray) -> np.ndarray:
    """Hair falling beside the neck to the shoulders, behind neck and cloth (SynthFace's `_long_hair`)."""
    f, out = face_frame(labels), labels.copy()
    width = f.face_w * 1.4
    region = (np.abs(f.u) < width) & (f.v > -0.1) & (f.v < 0.85)
    region |= _ellipse(f, 0, -0.1, width, f.face_h * 1.15) < 1
    out[region & (labels == BACKGROUND)] = HAIR
    return out


def make_smiling(labels: np.ndarray) -> np.ndarray:
    """Lips redrawn wider and curved up at the corners (SynthFace's smiling mouth, curved 1.5× as much)."""
    lips = np.isin(labels, (MOUTH, UPPER_LIP, LOWER_LIP))
    if not lips.any():
        raise ShapeError("The mask has no lips or mouth to make smile; draw the smile and make a mask edit.")
    f, out = face_frame(labels), labels.copy()
    middle, mouth_y = f.u[lips].mean(), f.v[lips].mean()
    mouth_w = (f.u[lips].max() - f.u[lips].min()) / 2 + 0.02
    s = (f.u - middle) / mouth_w
    inside = np.abs(s) < 1
    w = np.sqrt(np.clip(1 - s**2, 0, 1))
    centre = mouth_y - SMILE_CURVE * s**2
    out[lips] = SKIN
    out[inside & (f.v > centre - 0.032 * w) & (f.v <= centre)] = UPPER_LIP
    out[inside & (f.v > centre) & (f.v < centre + 0.04 * w)] = LOWER_LIP
    return out


# attribute (ATTRIBUTE_CHANGES' names) → its shape in words, and how it is drawn
SHAPE_WORDS = {"eyeglasses": "eyeglasses", "hat": "a hat", "bangs": "bangs", "hair_length": "long hair",
               "smiling": "a smile"}  # fmt: skip
SHAPES = {
    "eyeglasses": add_eyeglasses,
    "hat": add_hat,
    "bangs": add_bangs,
    "hair_length": make_hair_long,
    "smiling": make_smiling,
}
