"""A precomputed-condition cache: each mask's 20 condition encodings (and, optionally, each image's latent
tokens), stored once in safetensors shards.

The mask encoder is frozen (the VAE at full scale, patchify at compact scale), so each mask's condition
tensor [20, N, C] depends on the mask alone and can be computed once for a whole dataset; the image
latents (the VAE mean) likewise depend on the image alone. The manifest records the resolution, the
encoder's name and a hash of every mask and image file, and a dataset that opens the cache checks
them, so a cache never silently serves another dataset's files.

Building is shared by the processes of a distributed run: process r of N encodes shards r, r + N, …,
each written atomically with a small index beside it, so an interrupted build resumes where it stopped.
The processes then wait for each other on the files themselves (io.wait_for: no collective with a
timeout): the first process writes the manifest once every shard's index is there, and a process that
fails leaves a marker that makes the others stop with its message instead of waiting forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..io import (
    ProcessFailedError,
    atomic_write,
    failure_marker,
    mark_failure,
    read_json,
    wait_for,
    write_json,
)
from ..text import TextEmbedding

MANIFEST = "manifest.json"
IMAGE_SUFFIX = ".image"  # the key of an item's image latents beside its condition tensor (the stem)


class CacheMismatchError(ValueError):
    """A condition cache that does not match the dataset it was opened with."""


def file_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def build_condition_cache(
    dataset,
    encode: Callable[[torch.Tensor], torch.Tensor],
    folder: str | os.PathLike,
    encoder: str,
    shard_size: int = 128,
    batch_size: int = 8,
    encode_images: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rank: int = 0,
    world_size: int = 1,
    poll_seconds: float = 2.0,
) -> Path:
    """Encode every mask of `dataset` (labels [B, R, R] → [B, 20, N, C]) and, with `encode_images`, every
    image ([B, 3, R, R] → [B, N, C]); write shards and the manifest. Process `rank` of `world_size` encodes
    its share; every process returns once the whole cache is written. One shard (shard_size items) is
    in memory at a time."""

    def write_shard(folder: Path, shard: int, items: range) -> None:
        _write_shard(dataset, encode, encode_images, folder, shard, items, batch_size)

    def manifest(items: dict) -> dict:
        images = encode_images is not None
        return {"encoder": encoder, "resolution": dataset.resolution, "images": images, "items": items}

    count = len(dataset.stems)
    return _build_shards(folder, count, shard_size, write_shard, manifest, rank, world_size, poll_seconds)


def _build_shards(folder, count, shard_size, write_shard, manifest, rank, world_size, poll_seconds) -> Path:
    """The shared build: process `rank` writes shards rank, rank + world_size, … (skipping finished
    ones), then process 0 writes the manifest from the shards' indexes once all of them are there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / MANIFEST).is_file():
        return folder
    failure_marker(folder, rank).unlink(missing_ok=True)
    starts = list(range(0, count, shard_size))
    mine = [shard for shard in range(len(starts)) if shard % world_size == rank]
    try:
        for shard in tqdm(mine, desc=f"caching {folder.name}", unit="shard", disable=rank != 0):
            if not _index_path(folder, shard).is_file():
                write_shard(folder, shard, range(starts[shard], min(starts[shard] + shard_size, count)))
        if rank == 0:
            all_done = lambda: all(_index_path(folder, s).is_file() for s in range(len(starts)))  # noqa: E731
            wait_for(folder, all_done, f"Building the cache {folder}", world_size, poll_seconds)
            _write_manifest(folder, len(starts), manifest)
        else:
            manifest_written = lambda: (folder / MANIFEST).is_file()  # noqa: E731
            wait_for(folder, manifest_written, f"Building the cache {folder}", world_size, poll_seconds)
    except ProcessFailedError:
        raise
    except BaseException as error:
        mark_failure(folder, rank, error)
        raise
    return folder


def _index_path(folder: Path, shard: int) -> Path:
    return folder / f"shard_{shard:05d}.json"


def _write_shard(
    dataset, encode, encode_images, folder: Path, shard: int, items: range, batch_size: int
) -> None:
    """Encode one shard's masks (and images) and save it."""
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict] = {}
    for start in range(items.start, items.stop, batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, items.stop))]
        with torch.no_grad():
            conditions = encode(torch.stack([item["labels"] for item in batch]))
            images = encode_images(torch.stack([item["image"] for item in batch])) if encode_images else None
        for k, item in enumerate(batch):
            stem = item["stem"]
            tensors[stem] = conditions[k].contiguous()
            index[stem] = {"shard": shard, "hash": file_hash(dataset.masks[stem])}
            if images is not None:
                tensors[stem + IMAGE_SUFFIX] = images[k].contiguous()
                index[stem]["image_hash"] = file_hash(dataset.faces[stem])
    _save_shard(folder, shard, tensors, index)


def _save_shard(folder: Path, shard: int, tensors: dict[str, torch.Tensor], index: dict) -> None:
    """A shard's tensors, then its index (which marks it complete), each written atomically."""
    from safetensors.torch import save_file

    atomic_write(folder / f"shard_{shard:05d}.safetensors", lambda p: save_file(tensors, p))
    write_json(_index_path(folder, shard), index, indent=None)


def _write_manifest(folder: Path, shards: int, manifest: Callable[[dict], dict]) -> None:
    items: dict[str, dict] = {}
    for shard in range(shards):
        items.update(read_json(_index_path(folder, shard)))
    write_json(folder / MANIFEST, manifest(items), indent=None)


def _read_tensor(folder: Path, shard: int, key: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(folder / f"shard_{shard:05d}.safetensors", framework="pt") as f:
        return f.get_tensor(key)


class ConditionCache:
    """Read access to a cache written by build_condition_cache. Tensors are read from their shard file on
    demand (no copy of the cache is kept in memory)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not (self.folder / MANIFEST).is_file():
            raise CacheMismatchError(
                f"{self.folder} has no {MANIFEST}; build the cache with build_condition_cache."
            )
        self.manifest = json.loads((self.folder / MANIFEST).read_text())

    @property
    def has_images(self) -> bool:
        return bool(self.manifest.get("images"))

    def check(self, dataset, encoder: str | None = None) -> None:
        """Raise CacheMismatchError unless every item of `dataset` is cached from the same mask (and image) file."""
        problems = []
        if self.manifest["resolution"] != dataset.resolution:
            problems.append(
                f"resolution {self.manifest['resolution']} ≠ dataset resolution {dataset.resolution}"
            )
        if encoder is not None and self.manifest["encoder"] != encoder:
            problems.append(f"encoder {self.manifest['encoder']!r} ≠ {encoder!r}")
        items = self.manifest["items"]
        missing = [s for s in dataset.stems if s not in items]
        changed = [s for s in dataset.stems if s in items and items[s]["hash"] != file_hash(dataset.masks[s])]
        if self.has_images:
            changed += [
                s
                for s in dataset.stems
                if s in items and items[s]["image_hash"] != file_hash(dataset.faces[s])
            ]
        if missing:
            problems.append(f"{len(missing)} items not cached (e.g. {missing[:3]})")
        if changed:
            problems.append(f"{len(changed)} masks or images changed since caching (e.g. {changed[:3]})")
        if problems:
            raise CacheMismatchError(
                f"The condition cache {self.folder} does not match {dataset.root}: {'; '.join(problems)}. "
                "Rebuild it (delete the folder and run the caching step again)."
            )

    def get(self, stem: str) -> torch.Tensor:
        """One item's condition tensor [20, N, C]."""
        return self._read(stem, stem)

    def image(self, stem: str) -> torch.Tensor:
        """One item's image latent tokens [N, C] (a cache built with encode_images)."""
        return self._read(stem, stem + IMAGE_SUFFIX)

    def _read(self, stem: str, key: str) -> torch.Tensor:
        return _read_tensor(self.folder, self.manifest["items"][stem]["shard"], key)

    def batch(self, stems: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """The condition tensors of these items, stacked: [B, 20, N, C]."""
        return torch.stack([self.get(stem) for stem in stems]).to(device)

    def images(self, stems: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """The image latent tokens of these items, stacked: [B, N, C]."""
        return torch.stack([self.image(stem) for stem in stems]).to(device)


# ----------------------------------------------------------------------------
# Text cache: the encoded prompts of a training set (T5 states are ≈ 4 MB per caption at 512 tokens)
# ----------------------------------------------------------------------------


class TextCacheError(ValueError):
    """A text cache that would not fit on disk, or that another encoder wrote."""


def caption_key(caption: str) -> str:
    return hashlib.sha1(caption.encode("utf-8")).hexdigest()


def text_cache_bytes(count: int, length: int, token_dim: int, pooled_dim: int, element_size: int = 2) -> int:
    """Disk bytes of `count` cached captions: token states, their mask and the pooled embedding."""
    return count * (length * (token_dim * element_size + 1) + pooled_dim * element_size)


def build_text_cache(
    captions: list[str],
    encode: Callable[[list[str]], TextEmbedding],
    folder: str | os.PathLike,
    encoder: str,
    dtype: torch.dtype = torch.bfloat16,
    shard_size: int = 256,
    batch_size: int = 16,
    rank: int = 0,
    world_size: int = 1,
    poll_seconds: float = 2.0,
) -> Path:
    """Encode each distinct caption once into shards (shared by the processes of a run, as the condition
    cache is). Refuses, before any work, when the cache would not fit in the disk's free space."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    distinct = sorted(set(captions))
    if not (folder / MANIFEST).is_file() and not list(folder.glob("shard_*.json")):  # a fresh build
        _check_room(folder, distinct, encode, dtype)

    def write_shard(folder: Path, shard: int, items: range) -> None:
        tensors, index = {}, {}
        for start in range(items.start, items.stop, batch_size):
            batch = distinct[start : min(start + batch_size, items.stop)]
            with torch.no_grad():
                text = encode(batch)
            for k, caption in enumerate(batch):
                key = caption_key(caption)
                tensors[key + ".tokens"] = text.tokens[k].to("cpu", dtype).contiguous()
                tensors[key + ".mask"] = text.mask[k].cpu().contiguous()
                tensors[key + ".pooled"] = text.pooled[k].to("cpu", dtype).contiguous()
                index[key] = {"shard": shard}
        _save_shard(folder, shard, tensors, index)

    def manifest(items: dict) -> dict:
        return {"encoder": encoder, "items": items}

    count = len(distinct)
    return _build_shards(folder, count, shard_size, write_shard, manifest, rank, world_size, poll_seconds)


def _check_room(folder: Path, distinct: list[str], encode, dtype: torch.dtype) -> None:
    with torch.no_grad():
        probe = encode(distinct[:1])
    element = torch.empty((), dtype=dtype).element_size()
    _, length, width = probe.tokens.shape
    needed = text_cache_bytes(len(distinct), length, width, probe.pooled.shape[1], element)
    free = shutil.disk_usage(folder).free
    if needed > 0.9 * free:
        raise TextCacheError(
            f"A text cache of {len(distinct):,} captions needs {needed / 1e9:.1f} GB; {folder} has "
            f"{free / 1e9:.1f} GB free. Free space, point it elsewhere, or leave the text cache off "
            "(prompts are then encoded at every step)."
        )


class TextCache:
    """Read access to a text cache: captions → TextEmbedding, read from disk on demand."""

    def __init__(self, folder: str | os.PathLike, encoder: str | None = None):
        self.folder = Path(folder)
        if not (self.folder / MANIFEST).is_file():
            raise TextCacheError(f"{self.folder} has no {MANIFEST}; build it with build_text_cache.")
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        if encoder is not None and self.manifest["encoder"] != encoder:
            raise TextCacheError(
                f"The text cache {self.folder} was written by {self.manifest['encoder']!r}, not {encoder!r}; "
                "delete it to rebuild."
            )

    def batch(self, captions: list[str], device: torch.device | str = "cpu") -> TextEmbedding:
        """The cached encodings of these captions, stacked (tokens [B, L, D], mask [B, L], pooled [B, P])."""
        return TextEmbedding.cat([self._one(caption) for caption in captions]).to(device)

    def _one(self, caption: str) -> TextEmbedding:
        key = caption_key(caption)
        if key not in self.manifest["items"]:
            raise TextCacheError(
                f"The text cache {self.folder} has no entry for {caption[:60]!r}; rebuild it."
            )
        shard = self.manifest["items"][key]["shard"]
        tokens, mask, pooled = (
            _read_tensor(self.folder, shard, f"{key}.{part}") for part in ("tokens", "mask", "pooled")
        )
        return TextEmbedding(tokens[None], mask[None], pooled[None])
