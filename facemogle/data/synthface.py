"""SynthFace: procedural portrait faces with exactly matching 19-class label maps and attribute captions.

Every face is drawn from seeded distributions (index i with seed s always gives the same face), in
face coordinates (u, v): u to the image right, v down, the face about 0.84 wide and 1.1 tall, placed
with a random roll, scale and translation like an aligned CelebA-HQ crop. Parts are painted back to
front into a colour canvas and a label canvas at 2× resolution; the image is box-downsampled (soft,
anti-aliased edges) and the labels are point-sampled (crisp). "Left" parts are the person's left,
which appear on the image right, as in CelebAMask-HQ.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..io import atomic_write, remove_partial_writes
from ..labels import colorize, load_mask, save_mask

SUPERSAMPLE = 2

HAIR_COLORS = {
    "black": (28, 24, 22), "brown": (95, 62, 40), "blond": (220, 185, 112), "gray": (165, 163, 160),
    "red": (175, 62, 25),
}  # fmt: skip
IRIS_COLORS = {"brown": (85, 55, 35), "blue": (70, 110, 165), "green": (75, 120, 80)}
LIPSTICK_COLORS = {"red": (190, 30, 45), "pink": (215, 100, 130), "plum": (120, 40, 70)}
CLOTH_COLORS = {
    "white": (235, 235, 232), "black": (30, 30, 34), "gray": (120, 122, 126), "red": (170, 35, 40),
    "blue": (40, 70, 150), "green": (45, 110, 60), "yellow": (220, 190, 60), "purple": (100, 55, 130),
}  # fmt: skip
SKIN_TONES = ((242, 208, 185), (228, 185, 150), (200, 150, 115), (160, 110, 80), (110, 72, 50))
PALE_SKIN = (250, 225, 210)


@dataclass
class FaceAttributes:
    """The true attributes of one SynthFace face; captions state a subset of them, never anything false."""

    gender: str  # "female" | "male"
    hair_length: str  # "bald" | "short" | "long"
    hair_color: str | None  # None when bald
    hair_style: str | None  # "straight" | "wavy", None when bald
    bangs: bool
    receding_hairline: bool
    mouth: str  # "closed" | "smiling" | "open" (smiling with the mouth slightly open)
    lipstick: bool
    eyeglasses: bool
    hat: bool
    earrings: bool
    necklace: bool
    narrow_eyes: bool
    arched_eyebrows: bool
    bushy_eyebrows: bool
    big_nose: bool
    pale_skin: bool
    ears_visible: bool
    iris_color: str
    cloth_color: str

    @property
    def smiling(self) -> bool:
        return self.mouth != "closed"

    def to_dict(self) -> dict:
        return {**asdict(self), "smiling": self.smiling}


def sample_attributes(rng: np.random.Generator) -> FaceAttributes:
    female = rng.random() < 0.5
    length = rng.choice(["long", "short", "bald"], p=[0.6, 0.36, 0.04] if female else [0.1, 0.72, 0.18])
    hair = length != "bald"
    receding = bool(not female and length == "short" and rng.random() < 0.25)
    ears_visible = bool(length != "long" or rng.random() < 0.3)
    return FaceAttributes(
        gender="female" if female else "male",
        hair_length=str(length),
        hair_color=str(rng.choice(list(HAIR_COLORS), p=[0.3, 0.3, 0.2, 0.1, 0.1])) if hair else None,
        hair_style=str(rng.choice(["straight", "wavy"], p=[0.6, 0.4])) if hair else None,
        bangs=bool(hair and not receding and rng.random() < 0.25),
        receding_hairline=receding,
        mouth=str(rng.choice(["closed", "smiling", "open"], p=[0.45, 0.3, 0.25])),
        lipstick=bool(female and rng.random() < 0.5),
        eyeglasses=bool(rng.random() < 0.15),
        hat=bool(rng.random() < 0.12),
        earrings=bool(ears_visible and rng.random() < (0.45 if female else 0.05)),
        necklace=bool(rng.random() < (0.25 if female else 0.05)),
        narrow_eyes=bool(rng.random() < 0.2),
        arched_eyebrows=bool(female and rng.random() < 0.4),
        bushy_eyebrows=bool(not female and rng.random() < 0.35),
        big_nose=bool(rng.random() < 0.2),
        pale_skin=bool(rng.random() < 0.15),
        ears_visible=ears_visible,
        iris_color=str(rng.choice(list(IRIS_COLORS), p=[0.6, 0.25, 0.15])),
        cloth_color=str(rng.choice(list(CLOTH_COLORS))),
    )


# --- rendering ---


class _Canvas:
    """A colour canvas and a label canvas at render resolution, painted back to front."""

    def __init__(self, size: int, u: np.ndarray, v: np.ndarray):
        self.size = size
        self.u, self.v = u, v
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.labels = np.zeros((size, size), np.uint8)

    def paint(self, region: np.ndarray, label: int | None, color) -> None:
        """Give `region` a label (None keeps the labels) and a colour: an RGB triple or an [H, W, 3] array."""
        if label is not None:
            self.labels[region] = label
        self.rgb[region] = color[region] if isinstance(color, np.ndarray) and color.ndim == 3 else color


def _ellipse(u, v, cu, cv, au, av) -> np.ndarray:
    """Squared normalised radius of (u, v) in an axis-aligned ellipse (< 1 inside)."""
    return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2


def _shade(base, amount: np.ndarray) -> np.ndarray:
    """base colour × per-pixel brightness → [H, W, 3]."""
    return np.asarray(base, np.float32)[None, None] * amount[..., None]


@dataclass
class _Geometry:
    """Face-space sizes drawn for one face."""

    face_w: float
    face_h: float
    jaw: float
    eye_x: float
    eye_y: float
    eye_w: float
    eye_h: float
    mouth_y: float
    mouth_w: float
    yaw: float


def _sample_geometry(rng: np.random.Generator, attrs: FaceAttributes) -> _Geometry:
    male = attrs.gender == "male"
    return _Geometry(
        face_w=rng.uniform(0.38, 0.44) + (0.02 if male else 0.0),
        face_h=rng.uniform(0.52, 0.58),
        jaw=rng.uniform(0.25, 0.45) - (0.1 if male else 0.0),
        eye_x=rng.uniform(0.15, 0.19),
        eye_y=rng.uniform(-0.07, -0.03),
        eye_w=rng.uniform(0.07, 0.09),
        eye_h=rng.uniform(0.018, 0.024) if attrs.narrow_eyes else rng.uniform(0.032, 0.042),
        mouth_y=rng.uniform(0.27, 0.31),
        mouth_w=rng.uniform(0.10, 0.13) + (0.02 if attrs.smiling else 0.0),
        yaw=rng.uniform(-0.04, 0.04),
    )


def render_face(attrs: FaceAttributes, rng: np.random.Generator, size: int) -> tuple[Image.Image, np.ndarray]:
    """Render one face at size×size: (RGB image, label map [size, size] uint8)."""
    return render_parts(attrs, lambda part: rng, size)


PARTS = ("geometry", "background", "long_hair", "neck", "ears", "face", "brows", "mouth", "hair_cap", "glasses",
         "hat", "noise")  # fmt: skip


def render_parts(
    attrs: FaceAttributes, stream: Callable[[str], np.random.Generator], size: int
) -> tuple[Image.Image, np.ndarray]:
    """Render a face drawing each part's randomness from stream(part) (a name of PARTS). One generator for
    all parts is `render_face`; one generator per part makes faces that differ in one attribute identical
    everywhere else (the editing pairs, data/pairs.py)."""
    s = size * SUPERSAMPLE
    rng = stream("geometry")
    g = _sample_geometry(rng, attrs)
    roll, scale = rng.uniform(-0.12, 0.12), rng.uniform(1.0, 1.15)
    cx, cy = rng.uniform(-0.05, 0.05), rng.uniform(-0.08, 0.0)
    axis = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1
    x, y = axis[None, :] - cx, axis[:, None] - cy
    cos, sin = np.cos(roll), np.sin(roll)
    u, v = (cos * x + sin * y) / scale, (-sin * x + cos * y) / scale
    canvas = _Canvas(s, u.astype(np.float32), v.astype(np.float32))
    skin = np.asarray(PALE_SKIN if attrs.pale_skin else SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float32)
    skin = skin * rng.uniform(0.95, 1.05)
    _background(canvas, stream("background"), axis)
    if attrs.hair_length == "long":
        _long_hair(canvas, stream("long_hair"), attrs, g)
    _neck_and_cloth(canvas, stream("neck"), attrs, g, skin)
    if attrs.ears_visible:
        _ears(canvas, g, skin, attrs.earrings, stream("ears"))
    _face(canvas, g, skin, stream("face"))
    _brows(canvas, stream("brows"), attrs, g)
    _eyes(canvas, attrs, g)
    _nose(canvas, attrs, g, skin)
    _mouth(canvas, stream("mouth"), attrs, g, skin)
    if attrs.hair_length != "bald":
        _hair_cap(canvas, stream("hair_cap"), attrs, g)
    if attrs.eyeglasses:
        _glasses(canvas, stream("glasses"), g)
    if attrs.hat:
        _hat(canvas, stream("hat"), g)
    rgb = canvas.rgb.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean((1, 3))
    rgb = rgb + stream("noise").normal(0, 2.0, rgb.shape).astype(np.float32)
    labels = canvas.labels[SUPERSAMPLE // 2 :: SUPERSAMPLE, SUPERSAMPLE // 2 :: SUPERSAMPLE]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), np.ascontiguousarray(labels)


def _background(c: _Canvas, rng, axis) -> None:
    a, b = rng.uniform(40, 230, 3), rng.uniform(40, 230, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None] + 1.5) / 3  # [S, S] in (0, 1)
    blobs = np.asarray(
        Image.fromarray(rng.uniform(-1, 1, (4, 4)).astype(np.float32)).resize(
            (c.size, c.size), Image.BILINEAR
        )
    )
    ramp = np.clip(ramp + 0.15 * blobs, 0, 1)
    c.rgb[:] = a * (1 - ramp[..., None]) + b * ramp[..., None]


def _hair_texture(c: _Canvas, rng, attrs: FaceAttributes) -> np.ndarray:
    base = np.asarray(HAIR_COLORS[attrs.hair_color], np.float32) * rng.uniform(0.9, 1.1)
    freq = rng.uniform(60, 90)
    phase = c.u * freq + (np.sin(c.v * 9 + rng.uniform(0, 6)) * 6 if attrs.hair_style == "wavy" else 0)
    strands = 0.82 + 0.12 * np.sin(phase) + 0.06 * np.sin(c.v * 23 + phase * 0.3)
    light = 1.05 - 0.25 * np.clip(c.v + 0.3, 0, 1.2)
    return _shade(base, strands * light)


def _wave(c: _Canvas, attrs: FaceAttributes, rng) -> np.ndarray:
    """Boundary wobble of wavy hair (0 for straight hair)."""
    if attrs.hair_style != "wavy":
        return 0.0
    return 0.025 * np.sin(np.arctan2(c.v, c.u) * rng.integers(9, 14) + rng.uniform(0, 6))


def _long_hair(c: _Canvas, rng, attrs, g: _Geometry) -> None:
    width = g.face_w * rng.uniform(1.3, 1.5)
    end = rng.uniform(0.7, 1.0)
    region = (np.abs(c.u) < width + _wave(c, attrs, rng)) & (c.v > -0.1) & (c.v < end)
    region |= _ellipse(c.u, c.v, 0, -0.1, width, g.face_h * 1.15) < 1
    c.paint(region, 13, _hair_texture(c, rng, attrs))


def _neck_and_cloth(c: _Canvas, rng, attrs, g: _Geometry, skin) -> None:
    neck_w = g.face_w * rng.uniform(0.42, 0.52) * (1.12 if attrs.gender == "male" else 1.0)
    neck = (np.abs(c.u) < neck_w) & (c.v > 0.2)
    c.paint(neck, 17, _shade(skin, 0.78 + 0.1 * (1 - np.abs(c.u) / neck_w).clip(0, 1)))
    top = rng.uniform(0.75, 0.85)
    shoulders = c.v > top + 0.15 * (c.u / 0.9) ** 2
    if rng.random() < 0.5:  # round neckline
        opening = _ellipse(c.u, c.v, 0, top, neck_w * 1.3, rng.uniform(0.08, 0.16)) < 1
    else:  # v-neck
        depth = rng.uniform(0.12, 0.25)
        opening = np.abs(c.u) < neck_w * 1.3 * (1 - (c.v - top) / depth)
    cloth = shoulders & ~opening
    color = np.asarray(CLOTH_COLORS[attrs.cloth_color], np.float32)
    c.paint(cloth, 18, _shade(color, 0.85 + 0.15 * np.cos(c.u * 3 + c.v * 2)))
    if attrs.necklace:
        curve = top - 0.02 + 0.1 * (1 - (c.u / (neck_w * 1.25)) ** 2)
        band = (np.abs(c.v - curve) < 0.012) & (np.abs(c.u) < neck_w * 1.2)
        c.paint(band, 16, (230, 200, 90) if rng.random() < 0.5 else (210, 210, 215))


def _ears(c: _Canvas, g: _Geometry, skin, earrings: bool, rng) -> None:
    for side, label in ((-1, 9), (1, 8)):  # image left is the person's right ear
        cu = side * g.face_w * 0.97
        ear = _ellipse(c.u, c.v, cu, 0.0, 0.07, 0.12) < 1
        c.paint(ear, label, _shade(skin, 0.85 - 0.1 * np.abs(c.u - cu) / 0.07))
    if earrings:
        color = (235, 205, 95) if rng.random() < 0.6 else (215, 215, 220)
        for side in (-1, 1):
            c.paint(_ellipse(c.u, c.v, side * g.face_w * 0.99, 0.14, 0.022, 0.026) < 1, 15, color)


def _face(c: _Canvas, g: _Geometry, skin, rng) -> None:
    below = np.clip(c.v / g.face_h, 0, 1)
    half_width = g.face_w * (1 - g.jaw * below**2)
    r = (c.u / half_width) ** 2 + (c.v / g.face_h) ** 2
    face = r < 1
    light = 0.78 + 0.22 * np.sqrt(np.clip(1 - r, 0, 1)) + 0.04 * (c.u + rng.uniform(-0.3, 0.3))
    c.paint(face, 1, _shade(skin, light))


def _brows(c: _Canvas, rng, attrs, g: _Geometry) -> None:
    color = np.asarray(HAIR_COLORS[attrs.hair_color or "brown"], np.float32) * 0.7
    thick = rng.uniform(0.02, 0.028) if attrs.bushy_eyebrows else rng.uniform(0.01, 0.016)
    arch = rng.uniform(0.025, 0.035) if attrs.arched_eyebrows else rng.uniform(0.0, 0.012)
    height = g.eye_y - g.eye_h - rng.uniform(0.045, 0.06)
    for side, label in ((-1, 7), (1, 6)):
        cu = side * g.eye_x + g.yaw
        t = (c.u - cu) / (g.eye_w * 1.3)
        curve = height - arch * (1 - t**2)
        brow = (np.abs(t) < 1) & (np.abs(c.v - curve) < thick * (1 - 0.4 * t * side))
        c.paint(brow, label, color)


def _eyes(c: _Canvas, attrs, g: _Geometry) -> None:
    iris = np.asarray(IRIS_COLORS[attrs.iris_color], np.float32)
    for side, label in ((-1, 5), (1, 4)):
        cu = side * g.eye_x + g.yaw
        t = (c.u - cu) / g.eye_w
        eye = (np.abs(t) < 1) & (np.abs(c.v - g.eye_y) < g.eye_h * np.sqrt(np.clip(1 - t**2, 0, 1)))
        c.paint(eye, label, (235, 232, 228))
        radius = max(g.eye_h * 0.95, 0.025)
        c.paint(eye & (_ellipse(c.u, c.v, cu, g.eye_y, radius, radius) < 1), None, iris)
        c.paint(eye & (_ellipse(c.u, c.v, cu, g.eye_y, radius * 0.45, radius * 0.45) < 1), None, (15, 12, 12))


def _nose(c: _Canvas, attrs, g: _Geometry, skin) -> None:
    width = 0.065 if attrs.big_nose else 0.045
    top, bottom = g.eye_y + 0.04, g.mouth_y - 0.09 + (0.02 if attrs.big_nose else 0)
    t = (c.v - top) / (bottom - top)
    nose = (t > 0) & (t < 1) & (np.abs(c.u - g.yaw) < width * (0.35 + 0.65 * t**2))
    c.paint(nose, 2, _shade(skin, 0.86 + 0.1 * t))


def _mouth(c: _Canvas, rng, attrs, g: _Geometry, skin) -> None:
    s = (c.u - g.yaw) / g.mouth_w
    inside = np.abs(s) < 1
    w = np.sqrt(np.clip(1 - s**2, 0, 1))
    curve = {"closed": 0.0, "smiling": 0.03, "open": 0.035}[attrs.mouth]
    center = g.mouth_y - curve * s**2
    gap = (0.028 * w) if attrs.mouth == "open" else 0.0
    lips = np.asarray(
        LIPSTICK_COLORS[rng.choice(list(LIPSTICK_COLORS))] if attrs.lipstick else skin * [0.8, 0.55, 0.55]
    )
    upper = inside & (c.v > center - gap / 2 - 0.032 * w) & (c.v <= center - gap / 2)
    lower = inside & (c.v > center + gap / 2) & (c.v < center + gap / 2 + 0.04 * w)
    c.paint(upper, 11, lips * 0.9)
    c.paint(lower, 12, lips)
    if attrs.mouth == "open":
        mouth = inside & (c.v > center - gap / 2) & (c.v <= center + gap / 2)
        teeth = c.v < center - gap / 2 + gap * 0.45
        c.paint(mouth, 10, np.where(teeth[..., None], np.float32([240, 236, 225]), np.float32([90, 25, 30])))


def _hair_cap(c: _Canvas, rng, attrs, g: _Geometry) -> None:
    outer = _ellipse(c.u, c.v, 0, -0.06, g.face_w * 1.12, g.face_h * 1.12) < (1 + _wave(c, attrs, rng))
    if attrs.receding_hairline:
        hairline = -g.face_h * rng.uniform(0.72, 0.8) - 0.04 * (1 - (c.u / g.face_w) ** 2)
    elif attrs.bangs:
        hairline = g.eye_y - g.eye_h - rng.uniform(0.09, 0.11) + 0.0 * c.u
    else:
        hairline = -g.face_h * rng.uniform(0.5, 0.6) + 0.1 * (c.u / g.face_w) ** 2
    temple = c.v < (0.02 if attrs.hair_length == "long" else -0.08)
    below_line = c.v > hairline
    face_region = (c.u / g.face_w) ** 2 + (c.v / g.face_h) ** 2 < 1
    cap = (
        outer & temple & ~(face_region & below_line) & ~((c.labels == 8) | (c.labels == 9) | (c.labels == 15))
    )
    c.paint(cap, 13, _hair_texture(c, rng, attrs))


def _glasses(c: _Canvas, rng, g: _Geometry) -> None:
    frame_color = np.asarray((25, 25, 28) if rng.random() < 0.7 else (150, 110, 60), np.float32)
    rx, ry = g.eye_w * 1.45, max(g.eye_h * 2.2, 0.06)
    lens_any = np.zeros_like(c.labels, dtype=bool)
    for side in (-1, 1):
        r = _ellipse(c.u, c.v, side * g.eye_x + g.yaw, g.eye_y, rx, ry)
        lens, frame = r < 1, (r >= 1) & (r < 1.35)
        c.rgb[lens] = c.rgb[lens] * 0.85 + 20
        c.paint(frame, None, frame_color)
        lens_any |= lens | frame
    bridge = (np.abs(c.u - g.yaw) < g.eye_x - rx * 0.9) & (np.abs(c.v - g.eye_y + ry * 0.3) < 0.01)
    c.paint(bridge, None, frame_color)
    glasses = (lens_any | bridge) & ~np.isin(c.labels, (4, 5))  # eyes keep their labels, as in CelebAMask-HQ
    c.labels[glasses] = 3


def _hat(c: _Canvas, rng, g: _Geometry) -> None:
    color = rng.uniform(30, 220, 3).astype(np.float32)
    brim_v = -g.face_h * rng.uniform(0.55, 0.7)
    crown = (_ellipse(c.u, c.v, 0, brim_v, g.face_w * 1.15, rng.uniform(0.35, 0.45)) < 1) & (c.v < brim_v)
    brim = _ellipse(c.u, c.v, 0, brim_v, g.face_w * rng.uniform(1.3, 1.6), 0.045) < 1
    c.paint(crown | brim, 14, _shade(color, 0.8 + 0.2 * np.clip(-c.v, 0, 1)))


# --- captions ---


def captions(attrs: FaceAttributes, rng: np.random.Generator, count: int = 5) -> list[str]:
    """MM-CelebA-HQ-style captions; each states a random subset of the true attributes, in varied order."""
    return [_caption(attrs, rng) for _ in range(count)]


def _caption(a: FaceAttributes, rng) -> str:
    she = a.gender == "female"
    pronoun = "She" if she else "He"
    subject = str(
        rng.choice([pronoun, f"This {'woman' if she else 'man'}", f"The {'woman' if she else 'man'}"])
    )
    has, wears, states = [], [], []
    if a.hair_length == "bald":
        states.append("bald")
    elif rng.random() < 0.9:
        words = [a.hair_style if rng.random() < 0.8 else None, a.hair_length if rng.random() < 0.7 else None]
        words.append(a.hair_color)
        has.append(" ".join(w for w in words if w) + " hair")
    for flag, phrase in ((a.bangs, "bangs"), (a.receding_hairline, "a receding hairline"),
                         (a.arched_eyebrows, "arched eyebrows"), (a.bushy_eyebrows, "bushy eyebrows"),
                         (a.narrow_eyes, "narrow eyes"), (a.big_nose, "a big nose"), (a.pale_skin, "pale skin"),
                         (a.mouth == "open", "a slightly open mouth")):  # fmt: skip
        if flag and rng.random() < 0.85:
            has.append(phrase)
    for flag, phrase in ((a.lipstick, "lipstick"), (a.eyeglasses, "eyeglasses"), (a.hat, "a hat"),
                         (a.earrings, "earrings"), (a.necklace, "a necklace")):  # fmt: skip
        if flag and rng.random() < 0.9:
            wears.append(phrase)
    if a.smiling and rng.random() < 0.9:
        states.append("smiling")
    clauses = []
    if has:
        clauses.append(f"has {_join(_shuffled(has, rng))}")
    if wears:
        clauses.append(f"is wearing {_join(_shuffled(wears, rng))}")
    if states:
        clauses.append(f"is {_join(_shuffled(states, rng))}")
    if not clauses:
        return f"{subject} is a {'woman' if she else 'man'}."
    clauses = _shuffled(clauses, rng)
    if len(clauses) > 1 and rng.random() < 0.5:
        return f"{subject} {', '.join(clauses[:-1])} and {clauses[-1]}."
    sentences = [f"{subject} {clauses[0]}."] + [f"{pronoun} {clause}." for clause in clauses[1:]]
    return " ".join(sentences)


def _shuffled(items: list, rng) -> list:
    return [items[i] for i in rng.permutation(len(items))]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(attributes: dict) -> str:
    """One caption in SynthFace's template stating every attribute given (a FaceAttributes dict or an
    AttributeClassifier prediction), in a fixed order; `parse_caption` reads the same values back."""
    a = attributes
    she = a.get("gender") == "female"
    has, wears, states = [], [], []
    if a.get("hair_length") == "bald" or a.get("hair_color") is None:
        states.append("bald")
    else:
        words = (a.get("hair_style"), a.get("hair_length"), a["hair_color"])
        has.append(" ".join(w for w in words if w) + " hair")
    has += [phrase for key, phrase in HAS_PHRASES if a.get(key)]
    if a.get("mouth") == "open":
        has.append("a slightly open mouth")
    wears += [phrase for key, phrase in WEARS_PHRASES if a.get(key)]
    if a.get("smiling") or a.get("mouth") in ("smiling", "open"):
        states.append("smiling")
    clauses = [f"{verb} {_join(items)}" for verb, items in (("has", has), ("is wearing", wears), ("is", states))
               if items]  # fmt: skip
    return f"The {'woman' if she else 'man'} {_join(clauses)}."


HAS_PHRASES = (
    ("bangs", "bangs"), ("receding_hairline", "a receding hairline"), ("arched_eyebrows", "arched eyebrows"),
    ("bushy_eyebrows", "bushy eyebrows"), ("narrow_eyes", "narrow eyes"), ("big_nose", "a big nose"),
    ("pale_skin", "pale skin"),
)  # fmt: skip
WEARS_PHRASES = (
    ("lipstick", "lipstick"), ("eyeglasses", "eyeglasses"), ("hat", "a hat"), ("earrings", "earrings"),
    ("necklace", "a necklace"),
)  # fmt: skip


def parse_caption(caption: str) -> dict:
    """The attributes a SynthFace-style caption states: {attribute: value} for those it mentions."""
    text = f" {caption.lower()} "
    found: dict = {}
    if any(w in text for w in (" she ", " woman ", " her ")):
        found["gender"] = "female"
    elif any(w in text for w in (" he ", " man ", " his ")):
        found["gender"] = "male"
    for color in HAIR_COLORS:
        if f"{color} hair" in text:
            found["hair_color"] = color
    for style in ("wavy", "straight"):
        if f" {style} " in text and "hair" in text:
            found["hair_style"] = style
    if " bald" in text:
        found["hair_length"] = "bald"
    for length in ("long", "short"):
        if f" {length} " in text and "hair" in text:
            found["hair_length"] = length
    keywords = {
        "bangs": "bangs", "receding_hairline": "receding hairline", "arched_eyebrows": "arched eyebrows",
        "bushy_eyebrows": "bushy eyebrows", "narrow_eyes": "narrow eyes", "big_nose": "big nose",
        "pale_skin": "pale skin", "lipstick": "lipstick", "eyeglasses": "eyeglasses", "hat": " hat",
        "earrings": "earrings", "necklace": "necklace", "smiling": "smiling",
    }  # fmt: skip
    for attribute, keyword in keywords.items():
        if keyword in text:
            found[attribute] = True
    if "slightly open mouth" in text:
        found["mouth"] = "open"
    return found


# --- one item, deterministic by (seed, index) ---


def make_face(index: int, seed: int = 0, size: int = 64, num_captions: int = 5):
    """Face `index` of the SynthFace set with `seed`: (image, labels, captions, attributes)."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng)
    image, labels = render_face(attrs, rng, size)
    return image, labels, captions(attrs, rng, num_captions), attrs


# --- writing a dataset in the MM-CelebA-HQ layout ---


def _write_one(job: tuple) -> tuple[str, list[str], dict]:
    root, index, seed, size, ext = job
    image, labels, caps, attrs = make_face(index, seed, size)
    name = f"{index}.{ext}"
    options = {"format": "JPEG", "quality": 95} if ext == "jpg" else {"format": "PNG"}
    # each file whole or absent: a write killed midway leaves no truncated face, mask or caption file
    atomic_write(root / "face" / name, lambda path: image.save(path, **options))
    atomic_write(root / "mask" / f"{index}.png", lambda path: save_mask(labels, path))
    text = "\n".join(caps) + "\n"
    atomic_write(root / "text" / f"{index}.txt", lambda path: Path(path).write_text(text, encoding="utf-8"))
    return name, caps, attrs.to_dict()


def write_synthface(
    root: str | os.PathLike,
    count: int,
    seed: int = 0,
    size: int = 64,
    ext: str = "jpg",
    start: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write faces start..start+count-1 in the MM-CelebA-HQ layout: face/, mask/, text/, text.json, attributes.json."""
    if not 16 <= size <= 1024:
        raise ValueError(f"size must be between 16 and 1024 pixels, got {size}.")
    if ext not in ("jpg", "png"):
        raise ValueError(f"ext must be 'jpg' or 'png', got {ext!r}.")
    root = Path(root)
    _check_same_settings(root, {"seed": seed, "size": size, "ext": ext})
    for folder in ("face", "mask", "text"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        remove_partial_writes(root / folder)  # left by a write that was killed
    jobs = [(root, i, seed, size, ext) for i in range(start, start + count)]
    bar = tqdm(total=count, desc="synthface", unit="face", disable=not progress)
    results = []
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_write_one, jobs, chunksize=16):
                results.append(result)
                bar.update()
    else:
        for job in jobs:
            results.append(_write_one(job))
            bar.update()
    bar.close()
    _merge_json(root / "text.json", {name: caps for name, caps, _ in results})
    _merge_json(root / "attributes.json", {name: attrs for name, _, attrs in results})
    _merge_json(root / "synthface.json", {"seed": seed, "size": size, "ext": ext})
    return root


def read_settings(root: Path) -> dict | None:
    """A SynthFace folder's synthface.json (seed, size, ext), None when it has none."""
    path = root / "synthface.json"
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
        return {key: settings[key] for key in ("seed", "size", "ext")}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not SynthFace's settings ({error!r}); restore it, or regenerate the folder."
        ) from None


def _check_same_settings(root: Path, settings: dict) -> None:
    """One folder holds one SynthFace seed, size and format: a folder is known by them (a detector's
    training faces, the example masks), so adding faces of others would silently change what it holds."""
    held = read_settings(root)
    if held is not None and held != settings:
        raise ValueError(
            f"{root} holds SynthFace seed {held['seed']} at {held['size']}² ({held['ext']}), not seed "
            f"{settings['seed']} at {settings['size']}² ({settings['ext']}); a folder holds one seed, size and "
            "format: write these to another folder."
        )


def _merge_json(path: Path, entries: dict) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def contact_sheet(root: str | os.PathLike, count: int = 16, columns: int = 8, size: int = 96) -> Image.Image:
    """A grid of faces, each above its coloured mask, from a dataset folder in the MM-CelebA-HQ layout."""
    root = Path(root)
    stems = sorted((p.stem for p in (root / "mask").glob("*.png")), key=lambda s: (len(s), s))[:count]
    if not stems:
        raise FileNotFoundError(f"{root / 'mask'} holds no masks; is {root} a dataset folder?")
    rows = -(-len(stems) // columns)
    sheet = Image.new("RGB", (columns * size, rows * 2 * size), "white")
    for k, stem in enumerate(stems):
        face = next((root / "face").glob(f"{stem}.*"))
        r, col = divmod(k, columns)
        sheet.paste(Image.open(face).convert("RGB").resize((size, size)), (col * size, 2 * r * size))
        mask = colorize(load_mask(root / "mask" / f"{stem}.png")).resize((size, size), Image.NEAREST)
        sheet.paste(mask, (col * size, (2 * r + 1) * size))
    return sheet
