import pytest
import torch
from conftest import face_like_labels

import facemogle.pipeline
from facemogle.precision import bf16_is_fast, resolve_mixed_precision


@pytest.mark.parametrize(
    "capabilities, fast",
    [
        ({"avx512_bf16": True}, True),
        ({"amx_bf16": True}, True),
        ({"avx512_f": True, "avx512_bf16": False}, False),
    ],
)
def test_bf16_is_fast_follows_the_cpu(monkeypatch, capabilities, fast):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert bf16_is_fast("cpu") is fast
    assert resolve_mixed_precision("auto", "cpu") == ("bf16" if fast else "no")
    assert resolve_mixed_precision("bf16", "cpu") == "bf16" and resolve_mixed_precision("no", "cpu") == "no"


def test_unknown_mixed_precision_names_the_choices():
    with pytest.raises(ValueError, match="'auto', 'bf16' or 'no'.*'fp16'"):
        resolve_mixed_precision("fp16", "cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_sampling_autocasts_only_where_bf16_is_fast(tiny_pipe, monkeypatch, fast):
    monkeypatch.setattr(facemogle.pipeline, "bf16_is_fast", lambda device: fast)
    seen = []
    layer = next(m for m in tiny_pipe.model.modules() if isinstance(m, torch.nn.Linear))
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        tiny_pipe(mask=face_like_labels(32), num_inference_steps=1)
        tiny_pipe(mask=face_like_labels(32), num_inference_steps=1, autocast=not fast)
    finally:
        handle.remove()
    expected = {True: torch.bfloat16, False: torch.float32}
    assert seen[0] == expected[fast] and seen[-1] == expected[not fast]
