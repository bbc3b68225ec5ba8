import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facemogle.data.folders import DatasetError, FaceMaskTextDataset, assign_splits
from facemogle.labels import save_mask


def make_folder(root, stems, size=16):
    for name in ("face", "mask", "text"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(root / "face" / f"{stem}.jpg")
        save_mask(np.ones((size, size), np.uint8), root / "mask" / f"{stem}.png")
        (root / "text" / f"{stem}.txt").write_text(f"caption a of {stem}\ncaption b of {stem}\n")
    return root


def test_reads_items(tmp_path):
    root = make_folder(tmp_path / "d", ["0", "1", "2"], size=24)
    data = FaceMaskTextDataset(root, split="all", resolution=16, caption="first")
    item = data[1]
    assert item["image"].shape == (3, 16, 16) and -1 <= item["image"].min() and item["image"].max() <= 1
    assert item["labels"].shape == (16, 16) and int(item["labels"].max()) == 1
    assert item["caption"] == "caption a of 1" and item["stem"] == "1"


def test_random_caption_is_seeded_per_epoch(tmp_path):
    root = make_folder(tmp_path / "d", [str(i) for i in range(20)])
    data = FaceMaskTextDataset(root, split="all", resolution=16)
    first = [data[i]["caption"] for i in range(20)]
    assert first == [data.item(i, epoch=0)["caption"] for i in range(20)]
    assert first != [data.item(i, epoch=1)["caption"] for i in range(20)]


def test_official_celeba_split():
    stems = [str(i) for i in range(30000)]
    splits = assign_splits(stems, __import__("pathlib").Path("/nonexistent"))
    assert splits["26999"] == "train" and splits["27000"] == "test"
    assert sum(v == "test" for v in splits.values()) == 3000


def test_seeded_and_file_splits(tmp_path):
    root = make_folder(tmp_path / "d", [f"img{i}" for i in range(200)])
    train = FaceMaskTextDataset(root, "train", resolution=16, validate=False)
    test = FaceMaskTextDataset(root, "test", resolution=16, validate=False)
    assert not set(train.stems) & set(test.stems) and len(train) + len(test) == 200
    assert 5 < len(test) < 40
    (root / "splits.json").write_text(json.dumps({"train": ["img0", "img1"], "test": ["img2"]}))
    assert FaceMaskTextDataset(root, "test", resolution=16).stems == ["img2"]


def test_validation_reports_offending_files(tmp_path):
    root = make_folder(tmp_path / "d", ["0", "1", "2", "3", "4"])
    (root / "mask" / "1.png").unlink()
    bad = np.ones((16, 16), np.uint8) * 25
    Image.fromarray(bad, mode="L").save(root / "mask" / "2.png")
    (root / "face" / "3.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as error:
        FaceMaskTextDataset(root, split="all", resolution=16)
    message = str(error.value)
    assert "1.jpg" in message and "2.png" in message and "3.jpg" in message and "skip_invalid" in message
    data = FaceMaskTextDataset(root, split="all", resolution=16, skip_invalid=True)
    assert data.stems == ["0", "4"]


def test_missing_folders_and_text_json(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder"):
        FaceMaskTextDataset(tmp_path / "nothing")
    root = make_folder(tmp_path / "d", ["0", "1"])
    for p in (root / "text").iterdir():
        p.unlink()
    (root / "text").rmdir()
    (root / "text.json").write_text(json.dumps({"0.jpg": ["from json"], "1.jpg": ["also json"]}))
    assert FaceMaskTextDataset(root, "all", resolution=16, caption="first")[0]["caption"] == "from json"
    (root / "text.json").write_text(json.dumps({"0.jpg": ["only one"]}))
    with pytest.raises(DatasetError, match="without captions"):
        FaceMaskTextDataset(root, "all", resolution=16)


def test_condition_cache_is_used_and_checked(tmp_path):
    import torch

    from facemogle.data.cache import CacheMismatchError, build_condition_cache
    from facemogle.latents import encode_masks

    root = make_folder(tmp_path / "d", [str(i) for i in range(5)])
    data = FaceMaskTextDataset(root, "all", resolution=16)
    calls = []

    def encode(labels):
        calls.append(len(labels))
        return encode_masks(labels, 4)

    build_condition_cache(data, encode, tmp_path / "cache", encoder="patchify-4", shard_size=2, batch_size=2)
    assert sum(calls) == 5
    cached = FaceMaskTextDataset(
        root, "all", resolution=16, condition_cache=tmp_path / "cache", condition_encoder="patchify-4"
    )
    for _epoch in range(2):
        for i in range(len(cached)):
            item = cached[i]
            torch.testing.assert_close(item["condition"], encode_masks(item["labels"][None], 4)[0])
    assert sum(calls) == 5  # no mask was encoded again
    with pytest.raises(CacheMismatchError, match="encoder"):
        FaceMaskTextDataset(
            root, "all", resolution=16, condition_cache=tmp_path / "cache", condition_encoder="vae"
        )
    with pytest.raises(CacheMismatchError, match="resolution"):
        FaceMaskTextDataset(root, "all", resolution=8, condition_cache=tmp_path / "cache")
    save_mask(np.full((16, 16), 2, np.uint8), root / "mask" / "3.png")
    with pytest.raises(CacheMismatchError, match="changed since caching"):
        FaceMaskTextDataset(root, "all", resolution=16, condition_cache=tmp_path / "cache")


def _patchify_cache_args(calls):
    from facemogle.latents import encode_masks, patchify

    def encode(labels):
        calls.append(len(labels))
        return encode_masks(labels, 4)

    return encode, lambda images: patchify(images, 4)


def test_two_processes_build_one_cache_with_image_latents_and_a_build_resumes(tmp_path):
    import threading

    import torch

    from facemogle.data.cache import ConditionCache, build_condition_cache
    from facemogle.latents import encode_masks, patchify

    root = make_folder(tmp_path / "d", [str(i) for i in range(7)])
    for i in range(7):  # distinct masks and faces
        save_mask(np.full((16, 16), i % 19, np.uint8), root / "mask" / f"{i}.png")
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(root / "face" / f"{i}.png")
        (root / "face" / f"{i}.jpg").unlink()
    data = FaceMaskTextDataset(root, "all", resolution=16)
    calls = []
    encode, encode_images = _patchify_cache_args(calls)
    kwargs = dict(
        encoder="patchify-4", shard_size=2, batch_size=2, encode_images=encode_images, poll_seconds=0.01
    )
    errors = []

    def rank(r):
        try:
            build_condition_cache(data, encode, tmp_path / "cache", **kwargs, rank=r, world_size=2)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    ranks = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for thread in ranks:
        thread.start()
    for thread in ranks:
        thread.join(timeout=60)
    assert not errors and not any(thread.is_alive() for thread in ranks)
    assert sum(calls) == 7  # each mask encoded once, by one of the two
    cache = ConditionCache(tmp_path / "cache")
    cache.check(data, "patchify-4")
    for i in range(7):
        item = data[i]
        torch.testing.assert_close(cache.get(item["stem"]), encode_masks(item["labels"][None], 4)[0])
        torch.testing.assert_close(cache.image(item["stem"]), patchify(item["image"][None], 4)[0])
    (tmp_path / "cache" / "manifest.json").unlink()
    (tmp_path / "cache" / "shard_00002.json").unlink()  # as if interrupted while writing shard 2
    build_condition_cache(data, encode, tmp_path / "cache", **kwargs)
    assert sum(calls) == 7 + 2  # only the unfinished shard was encoded again
    ConditionCache(tmp_path / "cache").check(data, "patchify-4")
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(root / "face" / "3.png")
    with pytest.raises(Exception, match="changed since caching"):
        ConditionCache(tmp_path / "cache").check(FaceMaskTextDataset(root, "all", resolution=16))


def test_a_process_that_fails_stops_the_others_waiting_for_the_cache(tmp_path):
    import threading

    from facemogle.data.cache import build_condition_cache
    from facemogle.io import ProcessFailedError

    root = make_folder(tmp_path / "d", [str(i) for i in range(4)])
    data = FaceMaskTextDataset(root, "all", resolution=16)
    encode, _ = _patchify_cache_args([])

    def broken(labels):
        raise OSError("disk full")

    errors = {}

    def run(rank, fn):
        try:
            build_condition_cache(
                data,
                fn,
                tmp_path / "cache",
                "patchify-4",
                shard_size=1,
                rank=rank,
                world_size=2,
                poll_seconds=0.01,
            )
        except BaseException as error:  # noqa: BLE001
            errors[rank] = error

    ranks = [threading.Thread(target=run, args=(0, encode)), threading.Thread(target=run, args=(1, broken))]
    for thread in ranks:
        thread.start()
    for thread in ranks:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in ranks)
    assert isinstance(errors[1], OSError)
    assert (
        isinstance(errors[0], ProcessFailedError)
        and "disk full" in str(errors[0])
        and "process 1" in str(errors[0])
    )


def test_the_hash_split_does_not_depend_on_the_training_seed(tmp_path):
    root = make_folder(tmp_path / "d", [f"item{i}" for i in range(60)])
    test = FaceMaskTextDataset(root, "test", resolution=16, seed=0).stems
    assert test and FaceMaskTextDataset(root, "test", resolution=16, seed=3).stems == test
    assert not set(test) & set(FaceMaskTextDataset(root, "train", resolution=16, seed=3).stems)


def test_a_truncated_jpeg_is_found_when_opening_and_named_when_read(tmp_path):
    root = make_folder(tmp_path / "d", ["0", "1", "2"], size=64)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        root / "face" / "1.jpg", quality=95
    )
    data = (root / "face" / "1.jpg").read_bytes()
    (root / "face" / "1.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="1.jpg"):
        FaceMaskTextDataset(root, "all", resolution=16)
    unchecked = FaceMaskTextDataset(root, "all", resolution=16, validate=False)
    with pytest.raises(DatasetError, match="1.jpg"):
        unchecked[1]


def test_text_json_takes_one_caption_or_a_list_and_reports_other_values(tmp_path):
    root = make_folder(tmp_path / "d", ["0", "1", "2"])
    shutil.rmtree(root / "text")
    (root / "text.json").write_text(
        json.dumps({"0.jpg": "one caption", "1.jpg": ["first", "second"], "2.jpg": 7}), encoding="utf-8"
    )
    data = FaceMaskTextDataset(root, "all", resolution=16, caption="first", skip_invalid=True)
    assert [data[i]["caption"] for i in range(len(data))] == ["one caption", "first"]
    with pytest.raises(DatasetError, match="not a caption or a list of captions"):
        FaceMaskTextDataset(root, "all", resolution=16)


def test_non_square_faces_are_cropped_like_their_masks(tmp_path):
    root = make_folder(tmp_path / "d", ["0"])
    face = np.zeros((16, 32, 3), np.uint8)
    face[:, 8:24] = 255  # the centre square is white, the sides black
    Image.fromarray(face).save(root / "face" / "0.png")
    (root / "face" / "0.jpg").unlink()
    labels = np.zeros((16, 32), np.uint8)
    labels[:, 8:24] = 1
    save_mask(labels, root / "mask" / "0.png")
    item = FaceMaskTextDataset(root, "all", resolution=16)[0]
    assert int(item["labels"].min()) == 1  # the mask's centre crop
    assert float(item["image"].min()) > 0.9  # the face's same centre crop, not a squeezed whole


def _fake_text_encoder(calls):
    import torch

    from facemogle.text import TextEmbedding

    def encode(captions):
        calls.extend(captions)
        codes = torch.tensor(
            [[float(ord(c)) for c in caption[:6].ljust(6)] for caption in captions]
        )  # [B, 6]
        tokens = codes[:, :, None].expand(-1, 6, 4).clone()  # [B, L=6, D=4]
        mask = codes > 32
        return TextEmbedding(tokens, mask, codes[:, :3])

    return encode


def test_text_cache_encodes_each_distinct_caption_once_and_refuses_what_does_not_fit(tmp_path, monkeypatch):
    import collections

    import torch

    from facemogle.data import cache
    from facemogle.text import TextEmbedding

    captions = ["she is smiling", "he has a beard", "she is smiling", "bald", "he has a beard"]
    calls = []
    encode = _fake_text_encoder(calls)
    cache.build_text_cache(
        captions, encode, tmp_path / "text", "fake", dtype=torch.float32, shard_size=2, batch_size=2
    )
    assert sorted(calls[1:]) == sorted(set(captions))  # after the size probe, each distinct caption once
    texts = cache.TextCache(tmp_path / "text", "fake").batch(captions)
    expected = TextEmbedding.cat([encode([c]) for c in captions])
    for got, want in zip(
        (texts.tokens, texts.mask, texts.pooled), (expected.tokens, expected.mask, expected.pooled)
    ):
        torch.testing.assert_close(got, want)
    with pytest.raises(cache.TextCacheError, match="written by 'fake'"):
        cache.TextCache(tmp_path / "text", "t5")
    with pytest.raises(cache.TextCacheError, match="no entry"):
        cache.TextCache(tmp_path / "text").batch(["never seen"])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 100))
    with pytest.raises(cache.TextCacheError, match="GB free"):
        cache.build_text_cache(captions, encode, tmp_path / "other", "fake")
    assert not list((tmp_path / "other").glob("shard_*"))


def test_failure_markers_of_an_earlier_run_do_not_stop_a_new_one(tmp_path):
    import os

    from facemogle.data.cache import build_condition_cache
    from facemogle.io import PROCESS_STARTED, STALE_MARGIN_S, failure_marker

    root = make_folder(tmp_path / "d", [str(i) for i in range(3)])
    data = FaceMaskTextDataset(root, "all", resolution=16)
    encode, _ = _patchify_cache_args([])
    cache = tmp_path / "cache"
    cache.mkdir()
    old = PROCESS_STARTED - STALE_MARGIN_S - 10
    for rank in (1, 3):  # an earlier 4-process run failed in ranks 1 and 3
        failure_marker(cache, rank).write_text(f"process {rank}: OSError: disk full")
        os.utime(failure_marker(cache, rank), (old, old))
    failure_marker(cache, 5).write_text("process 5: from a larger run")  # beyond this run's processes
    build_condition_cache(data, encode, cache, "patchify-4", shard_size=1, poll_seconds=0.01)
    assert (cache / "manifest.json").is_file()
