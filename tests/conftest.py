import importlib.util
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from facemogle.labels import save_mask


def word_tokenizer(folder):
    """A word-level tokenizer built offline and saved in the transformers layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "[PAD] [UNK] [EOS] a an the she he woman man has is wearing hair blond black smiling lipstick eyeglasses".split()
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder)


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches and counters, empty before a compile test and after it."""
    import torch._dynamo

    torch._dynamo.reset()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def tiny_pipe():
    from facemogle.pipeline import FaceMoGLEPipeline

    return FaceMoGLEPipeline.init("tiny", seed=0)


def face_like_labels(size=32):
    """A hand-made face layout: background, hair, skin, eyes, nose, lips, neck, cloth."""
    y, x = np.mgrid[:size, :size] / size
    labels = np.zeros((size, size), np.uint8)
    labels[(x - 0.5) ** 2 / 0.12 + (y - 0.45) ** 2 / 0.2 < 1] = 13
    labels[(x - 0.5) ** 2 / 0.08 + (y - 0.5) ** 2 / 0.13 < 1] = 1
    labels[(y > 0.8) & (abs(x - 0.5) < 0.12)] = 17
    labels[y > 0.9] = 18
    labels[(abs(y - 0.42) < 0.03) & (abs(x - 0.38) < 0.05)] = 4
    labels[(abs(y - 0.42) < 0.03) & (abs(x - 0.62) < 0.05)] = 5
    labels[(abs(y - 0.55) < 0.05) & (abs(x - 0.5) < 0.03)] = 2
    labels[(abs(y - 0.67) < 0.02) & (abs(x - 0.5) < 0.08)] = 11
    labels[(abs(y - 0.7) < 0.02) & (abs(x - 0.5) < 0.08)] = 12
    return labels


@pytest.fixture
def mask_file(tmp_path):
    path = tmp_path / "mask.png"
    save_mask(face_like_labels(48), path)
    return path


def free_port() -> int:
    """A TCP port nothing listens on now (for servers and process groups started by a test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def one_thread():
    """Torch on one thread, as each `torchrun` process: a CPU's sums (bf16 most) depend on the thread
    count, so a one-process run compared with a torchrun one must use the same."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun` with two processes (one thread each) on a free port; its output captured."""
    return subprocess.run(
        ["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), *args],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout,
    )  # fmt: skip


def benchmark(name: str):
    """Import benchmarks/<name>.py (not a package) as the module `name`; registered in sys.modules, where
    its dataclasses look their module up."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
