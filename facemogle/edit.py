"""Editing an existing face without retraining: change the mask, change one attribute, or regenerate it
keeping its layout. Both scales; the design notes are in ../shared/EDITING.md of the developers' material.

Time convention as in flow.py: x_t = (1 − t)·z0 + t·ε, t = 0 the source z0 (pixels at the compact scale,
VAE latents at full scale). The region m (1 = regenerate) is grown to whole tokens, so blending is exact
per token; the decoded result is pasted onto the source through m feathered in pixels (a painted-on
attribute, lipstick: through its classes' own pixels feathered by 1 pixel), at the image's own size (a
photo larger than the model's resolution keeps its own pixels outside the region; inside, the model's
result is resized to it).

Operations (each with its default method and strength = the start time t_s):
- "mask": a new mask; m = where it differs from the source's. Blended sampling conditioned on the whole
  new mask, the known tokens replaced along the flow path after every step (FluxInpaint's rule:
  x ← m·x + (1 − m)·[(1 − t')·z0 + t'·ε], the same ε throughout, z0 at t' = 0). Default strength 1.
- "attribute": a prompt naming what to change; m = the classes it names (ATTRIBUTE_REGIONS, or `region`).
  An attribute with a shape of its own (eyeglasses, a hat, bangs, long hair, a smile: `drawn_shapes`) is
  drawn into the target mask (shapes.py; not where the source mask already shows it) and made as a mask
  edit with the target caption: m = where the masks differ, plus the named classes when the prompt also
  changes an attribute without a shape or `region` is given; method "blend" (an explicit method keeps the
  drawn mask: FlowEdit's target branch, inversion's and SDEdit's sampling are conditioned on it).
  Otherwise, default masked FlowEdit (no inversion): z_e ← z_e + Δ·[v(z_e + z_s − z0 | target) − v(z_s | source)],
  z_s = (1 − t)·z0 + t·ε with fresh ε each step, source and target sharing the source mask, then
  z_e ← z0 + m·(z_e − z0); strength t_max 0.85. Whatever the method, an edit that states a PAINTED
  attribute alone (lipstick) is pasted back through its classes' own pixels. Alternatives "inversion"
  (Euler inversion to t_s under the source condition without guidance, then blended sampling with the
  known tokens on the inverted latent's path: ε = (x_ts − (1 − t_s)·z0)/t_s) and "sdedit" (blended
  sampling from the noised source, strength 0.7). A shape the face already has — a class of its own in
  the mask (eyeglasses, a hat), or at the compact scale the attribute classifier's reading (bangs, long
  hair, a smile) — is not drawn again.
- "regenerate": mask-conditioned sampling on the source mask (or `mask`) from the noised source, no
  region (strength 1: a new person with the same layout; 0.5–0.8 keep colours and lighting). Default
  0.75. With "inversion" it starts from the source inverted instead. These are the unblended baselines
  of `eval --task edit`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .flow import sample_ode, time_grid, time_shift
from .images import images_to_tensor, tensor_to_images
from .labels import CLASSES, IMAGE_FORMATS, MaskSource, load_mask, resize_labels
from .parsing import load_parser, parse_images
from .shapes import SHAPE_WORDS, SHAPES, ShapeError, shows
from .watermark import mark_all

OPERATIONS = ("mask", "attribute", "regenerate")
METHODS = {
    "mask": ("blend", "inversion"),
    "attribute": ("flowedit", "inversion", "sdedit", "blend"),
    "regenerate": ("sdedit", "inversion"),
}
DEFAULT_METHOD = {"mask": "blend", "attribute": "flowedit", "regenerate": "sdedit"}
DEFAULT_STRENGTH = {"blend": 1.0, "flowedit": 0.85, "inversion": 0.85, "sdedit": 0.7}
REGENERATE_STRENGTH = 0.75
GROW = 0.04  # the changed region grows by 4% of the side (≥ 1 pixel) before it is rounded up to tokens
FEATHER = 0.015  # the paste-back blends over 1.5% of the side (≥ 1 pixel) each side of the region's edge
# Attributes painted on without changing a shape → their classes: an edit that states one of them alone
# and repaints only its classes is pasted back through their own pixels, feathered by 1 pixel, not through
# the grown tokens, where the mouth line and the skin around the lips would come from the edit too (the
# sampling blend stays per token).
PAINTED = {"lipstick": ("upper lip", "lower lip")}
# FlowEdit's source branch: weak text guidance (its authors' default), at most the target's
SOURCE_TEXT_GUIDANCE = 1.5

_IDS = {name: i for i, name in enumerate(CLASSES)}
EYES = ("left eye", "right eye")
BROWS = ("left brow", "right brow")
LIPS = ("upper lip", "lower lip")
# An attribute prompt's keywords → the classes of the source mask it edits (grown, then rounded to tokens).
# Colour and style words (blond, red, wavy, …) name the hair only when no other keyword matched, so that
# "red lipstick" edits the lips.
ATTRIBUTE_REGIONS = {
    ("eyeglasses", "glasses", "spectacles", "sunglasses"): ("eyeglasses", *EYES, *BROWS),
    ("hat", "cap", "beanie"): ("hat", "hair"),
    ("bangs", "fringe"): ("hair", "skin"),
    ("beard", "moustache", "mustache", "stubble"): ("hair", "skin"),
    ("lipstick", "lips", "lip"): LIPS,
    ("smile", "smiling", "smiles", "grin", "mouth", "teeth"): ("mouth", *LIPS),
    ("earring", "earrings"): ("left ear", "right ear", "earring"),
    ("necklace",): ("neck", "necklace"),
    ("eyebrows", "eyebrow", "brows", "brow"): BROWS,
    ("eyes", "eye"): EYES,
    ("nose",): ("nose",),
    ("skin", "pale", "tan", "complexion"): ("skin", "nose", "neck", "left ear", "right ear"),
    ("hair", "haired", "hairline"): ("hair",),
    ("shirt", "cloth", "clothes", "top", "dress"): ("cloth",),
}
LONG_HAIR = ["background", "neck", "cloth"]
HAIR_WORDS = ("blond", "blonde", "black", "brown", "gray", "grey", "red", "wavy", "straight", "curly",
              "long", "short", "brunette", "ginger")  # fmt: skip
REMOVAL_WORDS = ("remove", "removed", "without", "no", "not", "stop", "never", "take", "off", "delete", "erase",
                 "drop", "lose", "shorter", "bald", "shave", "shaved", "shaven")  # fmt: skip
# What an attribute prompt changes in the source's caption (compact scale): word → (attribute, value).
ATTRIBUTE_CHANGES = {
    "blond": ("hair_color", "blond"), "blonde": ("hair_color", "blond"), "black": ("hair_color", "black"),
    "brown": ("hair_color", "brown"), "brunette": ("hair_color", "brown"), "gray": ("hair_color", "gray"),
    "grey": ("hair_color", "gray"), "red": ("hair_color", "red"), "ginger": ("hair_color", "red"),
    "wavy": ("hair_style", "wavy"), "straight": ("hair_style", "straight"), "long": ("hair_length", "long"),
    "short": ("hair_length", "short"), "bangs": ("bangs", True), "fringe": ("bangs", True),
    "eyeglasses": ("eyeglasses", True), "glasses": ("eyeglasses", True), "hat": ("hat", True),
    "cap": ("hat", True), "beanie": ("hat", True), "spectacles": ("eyeglasses", True),
    "sunglasses": ("eyeglasses", True), "longer": ("hair_length", "long"), "lipstick": ("lipstick", True),
    "smile": ("smiling", True), "smiles": ("smiling", True), "grin": ("smiling", True), "smiling": ("smiling", True), "earrings": ("earrings", True), "earring": ("earrings", True),
    "necklace": ("necklace", True), "pale": ("pale_skin", True),
}  # fmt: skip


class EditError(ValueError):
    """An edit that cannot be made as asked; the message says what to pass instead."""


class NoChangeError(EditError):
    """An attribute edit whose target caption is the source's: there is nothing to change."""


@dataclass
class EditResult:
    """The edited faces and what produced them."""

    images: list[Image.Image]  # at the image's own size
    region: (
        np.ndarray
    )  # [S, S] float in [0, 1] at the image's size: the paste-back weight, 0 = the source kept
    source_labels: np.ndarray  # [R, R] uint8, at the model's resolution
    target_labels: np.ndarray  # [R, R] uint8: the mask the edit was conditioned on
    operation: str
    method: str
    strength: float
    prompt: str = ""  # the target condition's prompt
    source_prompt: str = ""
    settings: dict = field(default_factory=dict)


# --- the region ---


def _maybe_marked(images: list[Image.Image], watermark: bool) -> list[Image.Image]:
    return mark_all(images) if watermark else images


def changed_region(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Where two label maps differ [H, W] bool."""
    return np.asarray(source) != np.asarray(target)


def class_region(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    return np.isin(labels, [_IDS[c] for c in classes])


def token_region(region: np.ndarray, patch: int, grow: float = GROW) -> torch.Tensor:
    """A pixel region [H, W] bool → grown by `grow` of the side, then rounded up to whole tokens: [H, W] float."""
    x = torch.from_numpy(np.ascontiguousarray(region)).float()[None, None]  # [1, 1, H, W]
    g = max(1, round(grow * region.shape[0]))
    x = F.max_pool2d(x, 2 * g + 1, 1, g)
    tokens = F.max_pool2d(x, patch, patch)  # [1, 1, H/p, W/p]
    return F.interpolate(tokens, scale_factor=patch, mode="nearest")[0, 0]


def feathered(region: torch.Tensor, feather: float = FEATHER) -> torch.Tensor:
    """The paste-back weight: the region [H, W] box-blurred over `feather` of the side, exactly 0 and 1 away
    from its edge (a box, not a Gaussian, so the source is kept exactly outside the band)."""
    f = max(1, round(feather * region.shape[0]))
    return F.avg_pool2d(region[None, None], 2 * f + 1, 1, f, count_include_pad=False)[0, 0]


def painted_on(prompt: str, repainted: tuple[str, ...], shapes: tuple[str, ...]) -> bool:
    """An attribute edit that only paints on a PAINTED attribute: the prompt states it and nothing else,
    nothing is drawn, and only its classes are repainted ("add red lipstick"; not "make the lips fuller")."""
    if shapes or not repainted:
        return False
    stated = {name for name, _ in _stated_changes(prompt, repainted)}
    return len(stated) == 1 and stated <= PAINTED.keys() and set(repainted) <= set(PAINTED[stated.pop()])


def paste_region(changed: np.ndarray, patch: int, painted: bool) -> torch.Tensor:
    """The region pasted back [H, W] float, unfeathered: the changed pixels themselves for a painted-on
    attribute, else grown to whole tokens."""
    return torch.from_numpy(np.ascontiguousarray(changed)).float() if painted else token_region(changed, patch)


def paste_weight(changed: np.ndarray, patch: int, operation: str, painted: bool) -> torch.Tensor:
    """The paste-back weight [H, W]: the whole-token region feathered by FEATHER (a regeneration's not
    feathered: it covers the face), a painted-on attribute's own pixels feathered by 1 pixel."""
    if operation == "regenerate":
        return token_region(changed, patch)
    return feathered(paste_region(changed, patch, painted), 1 / len(changed) if painted else FEATHER)


def token_weights(region: torch.Tensor, patch: int) -> torch.Tensor:
    """A whole-token pixel region [H, W] → per-token weights [1, N, 1], row-major like patchify."""
    return F.max_pool2d(region[None, None], patch, patch).reshape(1, -1, 1)


# --- reading the prompt ---


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())


def attribute_classes(prompt: str) -> tuple[str, ...]:
    """The classes an attribute prompt edits, from ATTRIBUTE_REGIONS; () when it names none."""
    words = set(_words(prompt))
    classes = [c for keys, region in ATTRIBUTE_REGIONS.items() if words & set(keys) for c in region]
    if not classes and words & set(HAIR_WORDS):
        classes = ["hair"]
    if "hair" in classes and words & {"long", "longer"}:
        classes += LONG_HAIR  # long hair grows over them
    return tuple(dict.fromkeys(classes))


def names_hair(prompt: str, classes: tuple[str, ...] | None = None) -> bool:
    """Whether the prompt's colour and style words are about the hair: the region has the hair, and the
    prompt says "hair" or names nothing else ("red lipstick", "a black beard" or a region without the hair
    are not)."""
    classes = attribute_classes(prompt) if classes is None else classes
    words = set(_words(prompt))
    others = any(words & set(keys) for keys, region in ATTRIBUTE_REGIONS.items() if region != ("hair",))
    return "hair" in classes and ("hair" in words or not others)


def asks_removal(prompt: str) -> bool:
    return bool(set(_words(prompt)) & set(REMOVAL_WORDS))


def changed_attributes(source: dict, prompt: str, classes: tuple[str, ...] | None = None) -> dict:
    """The source's attributes with those an attribute prompt states changed (keywords of ATTRIBUTE_CHANGES);
    classes: the edit's region (default: from the prompt)."""
    target = dict(source)
    hair = names_hair(prompt, classes)
    for word in _words(prompt):
        if word in ATTRIBUTE_CHANGES and (hair or word not in HAIR_WORDS):
            name, value = ATTRIBUTE_CHANGES[word]
            target[name] = value
    if target.get("smiling") and target.get("mouth") == "closed":
        target["mouth"] = "smiling"
    return target


def _stated_changes(prompt: str, classes: tuple[str, ...]) -> list[tuple[str, object]]:
    """The (attribute, value) changes an attribute prompt states, as `changed_attributes` reads them."""
    hair = names_hair(prompt, classes)
    words = [w for w in _words(prompt) if w in ATTRIBUTE_CHANGES and (hair or w not in HAIR_WORDS)]
    return [ATTRIBUTE_CHANGES[w] for w in words]


def drawn_shapes(prompt: str, classes: tuple[str, ...]) -> tuple[str, ...]:
    """The attributes an attribute prompt adds whose shape the target mask must show (shapes.SHAPES):
    eyeglasses, a hat, bangs, long hair, a smile."""
    changes = _stated_changes(prompt, classes)
    return tuple(dict.fromkeys(name for name, value in changes if name in SHAPES and value in (True, "long")))


def attribute_target(
    source: np.ndarray, prompt: str, classes: tuple[str, ...], region=None, present: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """An attribute edit's target mask, region [H, W] bool, drawn shapes and repainted classes.

    The shapes the prompt adds are drawn into the target mask (not those the source already shows: its
    mask, or `present`, the attributes a classifier reads the face as having already); the region is where
    the masks differ, plus the named classes where the prompt also changes something without a shape of
    its own or `region` is given (the drawn shapes are kept either way)."""
    asked = shapes = drawn_shapes(prompt, classes)
    shown = tuple(name for name in shapes if shows(source, name) or name in present)
    others = [name for name, _ in _stated_changes(prompt, classes) if name not in shapes]
    if shown and len(shown) == len(shapes) and not others and region is None:
        raise NoChangeError(
            f"The face already shows {' and '.join(SHAPE_WORDS[n] for n in shown)}: nothing to add; to "
            "change its shape, repaint the mask and make a mask edit (mask=, --mask)."
        )
    shapes = tuple(name for name in shapes if name not in shown)
    target = draw_shapes(source, shapes)
    changed = changed_region(source, target)
    repainted = ()
    if region is not None or others or not shapes:
        long_hair = (
            "hair_length" in asked and region is None
        )  # grown over these (or there), not repainted whole
        repainted = tuple(c for c in classes if not (long_hair and c in LONG_HAIR))
        changed = changed | class_region(source, repainted)
    if not changed.any():
        raise EditError(
            f"The source mask has none of the classes {', '.join(classes)}; name the region to repaint "
            "with region= (--region), e.g. 'hair' or 'skin'."
        )
    return target, changed, shapes, repainted


def draw_shapes(labels: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The label map with each named attribute's shape drawn in; EditError where one cannot be placed."""
    for name in names:
        try:
            labels = SHAPES[name](labels)
        except ShapeError as error:
            raise EditError(str(error)) from None
    return labels


# --- inputs ---


def open_face(image) -> Image.Image:
    """A face image (path, PIL image or [H, W, 3] uint8 array) as RGB; square only; PNG/JPEG/WEBP files only."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        try:
            with Image.open(image, formats=IMAGE_FORMATS) as opened:
                image = opened.convert("RGB")
        except (OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise EditError(
                f"{image} is not a readable face image ({error}); pass a PNG, JPEG or WEBP file."
            ) from None
    if image.width != image.height:
        raise EditError(f"The image is {image.width}×{image.height}; crop it to a square face first.")
    return image.convert("RGB")


def load_image(image, size: int) -> torch.Tensor:
    """A face image → [1, 3, size, size] in [-1, 1] (see `open_face`)."""
    return images_to_tensor([open_face(image)], size)


def _mask_at(mask: MaskSource, image_size: tuple[int, int], size: int, name: str) -> np.ndarray:
    """A mask, which must have the image's size, at the model's resolution."""
    labels = load_mask(mask)
    if (labels.shape[1], labels.shape[0]) != tuple(image_size):
        raise EditError(
            f"The {name} is {labels.shape[1]}×{labels.shape[0]} but the image is {image_size[0]}×{image_size[1]}; "
            "give a mask of the image's size (`facemogle parse IMAGE --size SIDE` makes one)."
        )
    return resize_labels(labels, size)


def infer_operation(operation: str | None, mask, prompt: str | None) -> str:
    if operation is not None:
        if operation not in OPERATIONS:
            raise EditError(f"Unknown edit operation {operation!r}; use one of {', '.join(OPERATIONS)}.")
        if operation == "mask" and mask is None:
            raise EditError("A mask edit needs the new mask (mask=, --mask): the source's mask, repainted.")
        return operation
    if mask is not None:
        return "mask"
    if prompt and prompt.strip():
        raise EditError(
            "A prompt alone can change one attribute (operation 'attribute', --op attribute) or regenerate "
            "the face keeping its layout ('regenerate', --op regenerate): say which."
        )
    raise EditError("Nothing to edit: give a new mask (a mask edit) or a prompt with the operation.")


def check_method(operation: str, method: str | None, strength: float | None) -> tuple[str, float]:
    method = method or DEFAULT_METHOD[operation]
    if method not in METHODS[operation]:
        raise EditError(
            f"Method {method!r} does not apply to a {operation} edit; use one of {', '.join(METHODS[operation])}."
        )
    if strength is None:
        strength = REGENERATE_STRENGTH if operation == "regenerate" else DEFAULT_STRENGTH[method]
    if not 0 < strength <= 1:
        raise EditError(f"strength is the start time t_s in (0, 1], got {strength}.")
    return method, float(strength)


def check_region_names(names) -> tuple[str, ...]:
    """Class names (or indices) of a `region`, checked against CLASSES."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for name in names:
        key = (
            CLASSES[int(name)]
            if str(name).isdigit() and int(name) < len(CLASSES)
            else str(name).replace("_", " ")
        )
        if key not in _IDS:
            raise EditError(f"Unknown class {name!r} in the region; the classes are: {', '.join(CLASSES)}.")
        out.append(key)
    if not out:
        raise EditError(
            "The region names no class; give class names such as 'hair' or 'upper lip,lower lip'."
        )
    return tuple(out)


# --- the update rules ---


def sub_grid(grid: torch.Tensor, start: float) -> torch.Tensor:
    """The times of `grid` (1 → 0) below `start`, led by `start` itself."""
    below = grid[grid < start - 1e-6]
    return torch.cat([grid.new_tensor([start]), below])


def blended_sample(velocity, z0, noise, grid, weights, sampler="euler", x=None):
    """FluxInpaint's rule: sample from x (default the noised source at grid[0]); after each step the known
    tokens (weights 0) are put back on the source's flow path (1 − t')·z0 + t'·ε, exactly z0 at t' = 0."""
    start = grid[0]
    x = (1 - start) * z0 + start * noise if x is None else x

    def known(i: int, t: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        t_next = grid[i + 1]
        return weights * x_next + (1 - weights) * ((1 - t_next) * z0 + t_next * noise)

    return sample_ode(velocity, x, grid, sampler, on_step_end=known)


def flow_edit(target_velocity, source_velocity, z0, grid, weights, generator) -> torch.Tensor:
    """Masked FlowEdit (Kulikov et al., arXiv 2412.08629, n_avg = 1): no inversion; fresh noise each step."""
    z_edit = z0.clone()
    for i in range(len(grid) - 1):
        t, t_next = grid[i], grid[i + 1]
        noise = torch.randn(z0.shape, generator=generator, device=generator.device).to(z0)
        z_source = (1 - t) * z0 + t * noise
        z_target = z_edit + z_source - z0
        times = t.expand(z0.shape[0])
        z_edit = z_edit + (t_next - t) * (target_velocity(z_target, times) - source_velocity(z_source, times))
        z_edit = z0 + weights * (z_edit - z0)
    return z_edit


def invert(velocity, z0, grid) -> torch.Tensor:
    """Euler inversion: integrate the source condition's velocity from t = 0 back up to grid[0]."""
    return sample_ode(velocity, z0, grid.flip(0))


# --- the edit ---


@torch.no_grad()
def edit(
    pipe,
    image: str | os.PathLike | Image.Image | np.ndarray,
    operation: str | None = None,
    mask: MaskSource | None = None,
    source_mask: MaskSource | None = None,
    prompt: str | None = None,
    source_prompt: str | None = None,
    region=None,
    method: str | None = None,
    strength: float | None = None,
    seed: int = 0,
    num_images: int = 1,
    num_inference_steps: int | None = None,
    text_guidance: float | None = None,
    mask_guidance: float | None = None,
    sampler: str | None = None,
    text_interval: tuple[float, float] | None = None,
    mask_interval: tuple[float, float] | None = None,
    parser=None,
    classifier=None,
    autocast: bool | None = None,
    watermark: bool | None = None,
) -> EditResult:
    """Edit a face; see the module's docstring for the operations. `FaceMoGLEPipeline.edit` calls this.

    image: the face (square; the model works on it at its resolution; the edit and its region come back at
    the image's own size). mask: the new mask of a mask edit, or the mask a regeneration is conditioned on
    (default the source's).
    source_mask: the image's label map; None parses the image (`parser`, default the shipped SynthFace
    parser at the compact scale). source_prompt: the source's caption; None at the compact scale is the
    caption of the shipped attribute classifier's reading of the image (`classifier`), so an attribute
    edit is that caption with the stated attribute changed; at full scale "".
    watermark: mark the edited images after the paste-back (as `FaceMoGLEPipeline.__call__`'s watermark).
    """
    # 1. Check inputs
    operation = infer_operation(operation, mask, prompt)
    if operation == "attribute" and mask is not None:
        raise EditError(
            "An attribute edit draws its own target mask: to give the new mask, make a mask edit "
            "(operation 'mask', --op mask) with the prompt as its caption."
        )
    if operation != "attribute" and region is not None:
        raise EditError(
            f"region= (--region) chooses an attribute edit's classes; a {operation} edit's region is where "
            "the new mask differs (mask) or the whole face (regenerate)."
        )
    asked_method, asked_strength = method, strength
    method, strength = check_method(operation, method, strength)
    size = pipe.model.resolution
    face = open_face(image)
    image_size = face.size
    z_pixels = images_to_tensor([face], size)  # [1, 3, R, R] in [-1, 1]
    sampling = pipe.config.sampling.override(
        steps=num_inference_steps, text_guidance=text_guidance, mask_guidance=mask_guidance, sampler=sampler,
        text_interval=text_interval, mask_interval=mask_interval,
    )  # fmt: skip
    pipe._check_inputs(prompt, None, sampling.steps, num_images, True, "pil")
    # 2. The source's mask and caption; the target condition and the region
    source_labels = _source_labels(pipe, face, source_mask, size, parser)
    target_labels, classes, shapes, repainted = source_labels, (), (), ()
    reading = None  # the classifier's reading of the face (compact scale, attribute edits)
    if operation == "mask":
        target_labels = _mask_at(mask, image_size, size, "new mask")
        changed = changed_region(source_labels, target_labels)
        if not changed.any():
            raise EditError("The new mask is identical to the source's mask: there is nothing to edit.")
    elif operation == "attribute":
        classes = _attribute_region(prompt, region)
        if pipe.is_compact and source_prompt is None:
            reading = _reading(z_pixels, classifier)
        elif not pipe.is_compact and "short" in _words(prompt) and names_hair(prompt, classes):
            raise EditError(_SHORTER.format(prompt=prompt))
        present = tuple(
            n for n, value in _stated_changes(prompt, classes) if reading and reading.get(n) == value
        )
        target_labels, changed, shapes, repainted = attribute_target(
            source_labels, prompt, classes, region, present
        )
        if shapes and asked_method is None:  # drawn into the mask: a mask edit with the target caption
            method, strength = check_method(operation, "blend", asked_strength)
    else:
        if mask is not None:
            target_labels = _mask_at(mask, image_size, size, "mask")
        changed = np.ones_like(source_labels, dtype=bool)
    source_prompt, target_prompt = _prompts(operation, reading, prompt, source_prompt, classes)
    if method == "flowedit" and source_prompt == target_prompt:
        raise NoChangeError(
            f"The edit changes nothing in the face's description ({source_prompt!r}): the face already reads so, "
            "or the prompt names no attribute the captions know; describe the target (source_prompt= / "
            "--source-prompt with prompt=) or use method 'sdedit'."
        )
    patch = pipe.model.patch_size
    pixel_region = token_region(changed, patch)
    paste = paste_weight(changed, patch, operation, painted_on(prompt, repainted, shapes))
    # 3. Tokens, noise, time grid
    device = pipe.device
    rows, cols = pipe.model.grid(size, size)
    z0 = pipe.model.encode_images(z_pixels.to(device)).float().repeat(num_images, 1, 1)  # [B, N, C]
    weights = token_weights(pixel_region, patch).to(device)  # [1, N, 1]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(z0.shape, generator=generator).to(device)
    grid = sub_grid(time_grid(sampling.steps, time_shift(rows * cols)), strength).to(device)
    # 4. Edit
    with pipe.precision(autocast):
        target = pipe.velocity(
            target_prompt,
            target_labels,
            sampling.text_guidance,
            sampling.mask_guidance,
            num_images,
            (rows, cols),
            sampling=sampling,
        )
        if method == "flowedit":
            source = pipe.velocity(
                source_prompt,
                source_labels,
                min(SOURCE_TEXT_GUIDANCE, sampling.text_guidance),
                sampling.mask_guidance,
                num_images,
                (rows, cols),
                sampling=sampling,
            )
            tokens = flow_edit(target, source, z0, grid, weights, generator)
        else:
            start = None
            if method == "inversion":
                source = pipe.velocity(source_prompt, source_labels, 1.0, 1.0, num_images, (rows, cols))
                start = invert(source, z0, grid)
                noise = (start - (1 - grid[0]) * z0) / grid[0]  # the known tokens on the inverted path
            tokens = blended_sample(target, z0, noise, grid, weights, sampling.sampler, x=start)
    # 5. Decode; paste the source back outside the region, at the image's own size
    decoded = pipe.model.decode(tokens.float(), size, size).cpu()
    pasted, paste = paste_back(decoded, paste, face)
    return EditResult(
        _maybe_marked(tensor_to_images(pasted), pipe.watermark_for(watermark)), paste.numpy(), source_labels,
        target_labels, operation, method, strength,
        target_prompt, source_prompt,
        {"steps": sampling.steps, "text_guidance": sampling.text_guidance, "mask_guidance": sampling.mask_guidance,
         "seed": seed, "region_classes": list(repainted), "drawn_shapes": list(shapes)},
    )  # fmt: skip


def paste_back(
    decoded: torch.Tensor, weight: torch.Tensor, face: Image.Image
) -> tuple[torch.Tensor, torch.Tensor]:
    """decoded [B, 3, R, R] pasted onto the face through weight [R, R], both resized to the face's own size
    first where it is not the model's: (the edits [B, 3, S, S], the weight used [S, S])."""
    side = face.width
    source = images_to_tensor([face], side)  # [1, 3, S, S]: the face's own pixels
    if side != decoded.shape[-1]:
        decoded = F.interpolate(decoded, size=(side, side), mode="bicubic", antialias=True).clamp(-1, 1)
        weight = F.interpolate(weight[None, None], size=(side, side), mode="bilinear", antialias=True)[0, 0]
    return weight * decoded + (1 - weight) * source, weight


def _source_labels(pipe, face: Image.Image, source_mask, size: int, parser) -> np.ndarray:
    """The face's label map at the model's resolution: the given mask, or the face parsed at its own size
    (as `facemogle parse` does, so a mask it made and repainted differs only where it was repainted)."""
    if source_mask is not None:
        return _mask_at(source_mask, face.size, size, "source mask")
    if parser is None and not pipe.is_compact:
        raise EditError(
            "A full-scale edit needs the photo's mask: pass source_mask (--source-mask) or a face parser "
            "for real photos (--parser FOLDER_OR_FILE: a CelebAMask-HQ SegFormer folder or BiSeNet's 79999_iter.pth)."
        )
    if parser is None or isinstance(parser, (str, os.PathLike)):
        parser = load_parser(parser)
    labels = parse_images(parser, images_to_tensor([face], face.width), face.width)[0]
    return resize_labels(labels, size)


def _attribute_region(prompt: str | None, region) -> tuple[str, ...]:
    if not (prompt and prompt.strip()):
        raise EditError("An attribute edit needs a prompt naming the change, e.g. 'make the hair blond'.")
    if asks_removal(prompt):
        raise EditError(
            f"{prompt!r} asks to remove something (or to shorten the hair): removals are mask edits. Parse the "
            "face (`facemogle parse`), paint the class over with its neighbours, and pass that mask (--mask)."
        )
    if region is not None:
        return check_region_names(region)
    classes = attribute_classes(prompt)
    if not classes:
        raise EditError(
            f"{prompt!r} names nothing the keyword table knows (hair, eyeglasses, hat, lipstick, smile, …; "
            "see facemogle.edit.ATTRIBUTE_REGIONS); name the region with region= (--region), e.g. 'hair'."
        )
    return classes


_SHORTER = (
    "{prompt!r} shortens the hair: that is a removal, a mask edit. Parse the face (`facemogle parse`), "
    "paint the long hair over with background, neck and cloth, and pass that mask (--mask)."
)


def _reading(pixels: torch.Tensor, classifier=None) -> dict:
    """The shipped (or given) attribute classifier's reading of a face [1, 3, R, R]."""
    from .evaluators import load_evaluator

    classifier = classifier or load_evaluator("classifier")
    resolution = classifier.config.resolution
    return classifier.predict(F.interpolate(pixels, size=resolution, mode="bilinear", antialias=True))[0]


def _prompts(operation, reading, prompt, source_prompt, classes) -> tuple[str, str]:
    """(source prompt, target prompt). With a classifier's reading of the face (a compact-scale attribute
    edit without a source prompt) the source prompt describes it, the target that with the prompt's change."""
    prompt = prompt or ""
    if operation != "attribute" or reading is None:
        return source_prompt or "", prompt
    from .data.synthface import describe

    target = changed_attributes(reading, prompt, classes)
    if reading.get("hair_length") == "long" and target.get("hair_length") == "short":
        raise EditError(_SHORTER.format(prompt=prompt))
    return describe(reading), describe(target)
