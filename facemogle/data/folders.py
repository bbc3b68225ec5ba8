"""Datasets in the MM-CelebA-HQ layout: face/{stem}.jpg, mask/{stem}.png, text/{stem}.txt (or text.json).

The same layout serves MM-FFHQ-Female, MM-FairFace-HQ and SynthFace. Everything is validated when the
dataset is opened, so a bad file is reported up front with its name, never as a crash mid-epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..labels import IMAGE_FORMATS, MaskError, load_mask

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CELEBA_TEST_START = 27000  # MM-CelebA-HQ: 0–26999 train, 27000–29999 test
CELEBA_SIZE = 30000


class DatasetError(ValueError):
    """A dataset folder with problems; the message lists the offending files and what to do."""


@dataclass
class DatasetReport:
    """Problems found when opening a dataset folder."""

    problems: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str) -> None:
        self.problems.setdefault(kind, []).append(name)

    def bad_stems(self) -> set[str]:
        return {Path(n).stem for names in self.problems.values() for n in names}

    def __str__(self) -> str:
        lines = []
        for kind, names in self.problems.items():
            shown = ", ".join(names[:10]) + (f" … and {len(names) - 10} more" if len(names) > 10 else "")
            lines.append(f"- {kind} ({len(names)}): {shown}")
        return "\n".join(lines)


class FaceMaskTextDataset(torch.utils.data.Dataset):
    """Face images, label maps and captions paired by file stem.

    split: "train", "test" or "all". MM-CelebA-HQ (integer stems up to 29999) uses the official split;
    a root with splits.json ({"train": [stems], "test": [stems]}) uses that; any other root a seeded
    hash split with `test_fraction` of the items in test.
    Items: {"image": [3, R, R] float in [-1, 1], "labels": [R, R] long, "caption": str, "stem": str}, plus
    "condition" [20, N, C] from `condition_cache` (a folder of data.cache), checked against the masks on open.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        resolution: int = 64,
        seed: int = 0,
        test_fraction: float = 0.1,
        caption: str = "random",
        skip_invalid: bool = False,
        validate: bool = True,
        cache_in_memory: bool = False,
        condition_cache: str | os.PathLike | None = None,
        condition_encoder: str | None = None,
    ):
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
        if caption not in ("random", "first"):
            raise ValueError(f"caption must be 'random' or 'first', got {caption!r}.")
        self.root = Path(root)
        self.resolution, self.seed, self.caption = resolution, seed, caption
        faces, masks, captions, report = _index(self.root)
        if validate:
            _validate(faces, masks, report)
        if report.problems:
            if not skip_invalid:
                raise DatasetError(
                    f"{self.root} has files that cannot be used:\n{report}\n"
                    "Fix or remove them, or pass skip_invalid=True (--skip-invalid) to leave them out."
                )
        stems = sorted(set(faces) & set(masks) & set(captions) - report.bad_stems(), key=stem_order)
        splits = assign_splits(stems, self.root, test_fraction=test_fraction)  # never the training seed
        self.stems = [s for s in stems if split == "all" or splits[s] == split]
        if not self.stems:
            raise DatasetError(f"{self.root} has no usable items in the {split!r} split.")
        self.faces, self.masks, self.captions = faces, masks, captions
        self.report = report
        self._memory: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache_in_memory else None
        self.condition_cache = None
        if condition_cache is not None:
            from .cache import ConditionCache

            self.condition_cache = ConditionCache(condition_cache)
            self.condition_cache.check(self, condition_encoder)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict:
        return self.item(index)

    def item(self, index: int, epoch: int = 0) -> dict:
        """Item `index` as seen in `epoch`: caption="random" draws its caption from (seed, epoch, index),
        so each epoch draws anew and the draw depends on no state of the dataset."""
        stem = self.stems[index]
        image, labels = self._load(index)
        captions = self.captions[stem]
        if self.caption == "first":
            caption = captions[0]
        else:
            caption = captions[np.random.default_rng([self.seed, epoch, index]).integers(len(captions))]
        item = {
            "image": torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1,
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "caption": caption,
            "stem": stem,
        }
        if self.condition_cache is not None:
            item["condition"] = self.condition_cache.get(stem)
        return item

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._memory is not None and index in self._memory:
            return self._memory[index]
        stem = self.stems[index]
        image = _read_face(self.faces[stem], self.resolution)
        try:
            labels = load_mask(self.masks[stem], size=self.resolution, fit="crop")
        except MaskError as error:
            raise DatasetError(f"{self.masks[stem]}: {error}") from None
        if self._memory is not None:
            self._memory[index] = (image, labels)
        return image, labels


def _read_face(path: Path, resolution: int) -> np.ndarray:
    """A face image, centre-cropped to a square as masks are (fit="crop"), resized to resolution²."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as face:
            image = face.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(f"{path} cannot be read ({error}); fix or remove it.") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BICUBIC)
    return np.array(image)


def stem_order(stem: str):
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _index(root: Path) -> tuple[dict, dict, dict, DatasetReport]:
    report = DatasetReport()
    missing = [name for name in ("face", "mask") if not (root / name).is_dir()]
    if not root.is_dir() or missing:
        raise DatasetError(
            f"{root} is not a dataset folder in the MM-CelebA-HQ layout: missing {missing or [str(root)]}. "
            "Expected face/, mask/ and text/ (or text.json); make one with `facemogle data synth OUT`."
        )
    faces = {p.stem: p for p in (root / "face").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    masks = {p.stem: p for p in (root / "mask").iterdir() if p.suffix.lower() == ".png"}
    captions = _read_captions(root, report)
    for stem in sorted(set(faces) - set(masks)):
        report.add("faces without a mask", faces[stem].name)
    for stem in sorted(set(masks) - set(faces)):
        report.add("masks without a face", masks[stem].name)
    for stem in sorted((set(faces) & set(masks)) - set(captions)):
        report.add("items without captions", f"{stem}")
    return faces, masks, captions, report


def _read_captions(root: Path, report: DatasetReport) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = {}
    if (root / "text.json").is_file():
        try:
            data = json.loads((root / "text.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{root / 'text.json'} is not valid UTF-8 JSON ({error}).") from None
        if not isinstance(data, dict):
            raise DatasetError(
                f"{root / 'text.json'} must map file names to captions, got {type(data).__name__}."
            )
        for name, caps in data.items():
            caps = [caps] if isinstance(caps, str) else caps  # one caption, or a list of them
            if isinstance(caps, list) and all(isinstance(c, str) for c in caps):
                if caps:
                    captions[Path(name).stem] = caps
            else:
                report.add("text.json entries that are not a caption or a list of captions", name)
    if (root / "text").is_dir():
        for path in (root / "text").glob("*.txt"):
            text = path.read_text(encoding="utf-8", errors="replace")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                captions[path.stem] = lines
            elif path.stem not in captions:
                report.add("empty caption files", path.name)
    return captions


def _validate(faces: dict, masks: dict, report: DatasetReport) -> None:
    """Open every mask (labels must be 0..18) and decode every face image (a truncated JPEG passes a
    header check but not a decode)."""
    stems = sorted(set(faces) & set(masks), key=stem_order)
    for stem in tqdm(stems, desc="checking dataset", unit="item", disable=len(stems) < 2000):
        try:
            with Image.open(faces[stem], formats=IMAGE_FORMATS) as image:
                image.load()
        except (UnidentifiedImageError, OSError, SyntaxError):
            report.add("unreadable face images", faces[stem].name)
        try:
            load_mask(masks[stem])
        except MaskError as error:
            report.add(f"invalid masks ({str(error).split('(')[0].strip()})", masks[stem].name)


def assign_splits(stems: list[str], root: Path, seed: int = 0, test_fraction: float = 0.1) -> dict[str, str]:
    """stem → "train" | "test": splits.json if present, the official MM-CelebA-HQ split, or a seeded hash."""
    splits = _split_file(root)
    if splits is not None:
        return {s: "test" if s in splits["test"] else "train" for s in stems}
    if _is_celeba(stems):
        return {s: "test" if int(s) >= CELEBA_TEST_START else "train" for s in stems}
    threshold = test_fraction * 0xFFFFFFFF
    return {
        s: "test" if int(hashlib.sha1(f"{seed}:{s}".encode()).hexdigest()[:8], 16) < threshold else "train"
        for s in stems
    }


def _split_file(root: Path) -> dict | None:
    path = root / "splits.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not valid UTF-8 JSON ({error}).") from None
    valid = isinstance(data, dict) and all(isinstance(data.get(k, []), list) for k in ("train", "test"))
    if not valid:
        raise DatasetError(f'{path} must be {{"train": [stems], "test": [stems]}}; fix or remove it.')
    return {"train": set(map(str, data.get("train", []))), "test": set(map(str, data.get("test", [])))}


def _is_celeba(stems: list[str]) -> bool:
    return bool(stems) and all(s.isdigit() for s in stems) and max(int(s) for s in stems) >= CELEBA_SIZE - 1
