"""A precomputed-condition cache: the 20 condition encodings of each mask, stored once in safetensors shards.

The mask encoder is frozen (the VAE at full scale, patchify at compact scale), so each mask's condition
tensor [20, N, C] depends on the mask alone and can be computed once for a whole dataset. The manifest
records the resolution, the encoder's name and a hash of every mask file, and a dataset that opens the
cache checks them, so a cache never silently serves another dataset's masks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..io import atomic_write, read_json, write_json

MANIFEST = "manifest.json"


class CacheMismatchError(ValueError):
    """A condition cache that does not match the dataset it was opened with."""


def mask_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def build_condition_cache(
    dataset,
    encode: Callable[[torch.Tensor], torch.Tensor],
    folder: str | os.PathLike,
    encoder: str,
    shard_size: int = 1024,
    batch_size: int = 32,
) -> Path:
    """Encode every mask of `dataset` (labels [B, R, R] → [B, 20, N, C]) and write shards + manifest."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items: dict[str, dict] = {}
    stems = dataset.stems
    for shard, start in enumerate(
        tqdm(range(0, len(stems), shard_size), desc="caching conditions", unit="shard")
    ):
        tensors = {}
        for batch_start in range(start, min(start + shard_size, len(stems)), batch_size):
            indices = range(batch_start, min(batch_start + batch_size, start + shard_size, len(stems)))
            labels = torch.stack([dataset[i]["labels"] for i in indices])
            with torch.no_grad():
                encoded = encode(labels)
            for i, tensor in zip(indices, encoded):
                tensors[stems[i]] = tensor.contiguous()
                items[stems[i]] = {"shard": shard, "hash": mask_hash(dataset.masks[stems[i]])}
        name = f"shard_{shard:05d}.safetensors"
        atomic_write(folder / name, lambda p, t=tensors: save_file(t, p))
    manifest = {"encoder": encoder, "resolution": dataset.resolution, "items": items}
    write_json(folder / MANIFEST, manifest, indent=None)
    return folder


class ConditionCache:
    """Read access to a cache written by build_condition_cache; shards are loaded on first use."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not (self.folder / MANIFEST).is_file():
            raise CacheMismatchError(
                f"{self.folder} has no {MANIFEST}; build the cache with build_condition_cache."
            )
        self.manifest = read_json(self.folder / MANIFEST)
        self._shards: dict[int, dict[str, torch.Tensor]] = {}

    def check(self, dataset, encoder: str | None = None) -> None:
        """Raise CacheMismatchError unless every item of `dataset` is cached from the same mask file."""
        problems = []
        if self.manifest["resolution"] != dataset.resolution:
            problems.append(
                f"resolution {self.manifest['resolution']} ≠ dataset resolution {dataset.resolution}"
            )
        if encoder is not None and self.manifest["encoder"] != encoder:
            problems.append(f"encoder {self.manifest['encoder']!r} ≠ {encoder!r}")
        items = self.manifest["items"]
        missing = [s for s in dataset.stems if s not in items]
        changed = [s for s in dataset.stems if s in items and items[s]["hash"] != mask_hash(dataset.masks[s])]
        if missing:
            problems.append(f"{len(missing)} items not cached (e.g. {missing[:3]})")
        if changed:
            problems.append(f"{len(changed)} masks changed since caching (e.g. {changed[:3]})")
        if problems:
            raise CacheMismatchError(
                f"The condition cache {self.folder} does not match {dataset.root}: {'; '.join(problems)}. "
                "Rebuild it (delete the folder and run the caching step again)."
            )

    def get(self, stem: str) -> torch.Tensor:
        from safetensors.torch import load_file

        shard = self.manifest["items"][stem]["shard"]
        if shard not in self._shards:
            self._shards[shard] = load_file(self.folder / f"shard_{shard:05d}.safetensors")
        return self._shards[shard][stem]

    def batch(self, stems: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """The condition tensors of these items, stacked: [B, 20, N, C]."""
        return torch.stack([self.get(stem) for stem in stems]).to(device)
