"""Face photo → 19-class label map: the shipped SynthFace parser, or a CelebAMask-HQ parser the user brings.

`load_parser(path)`:
- None: the SynthFace parser shipped with facemogle (evaluators/parser), for compact-scale faces;
- a folder: a transformers `SegformerForSemanticSegmentation` checkpoint with 19 face classes; its
  `id2label` names (CelebAMask-HQ's short names such as `eye_g`, `l_eye`, `ear_r`, or ours) are mapped to
  facemogle's classes through LABEL_ALIASES;
- a file: the widely used BiSeNet face-parsing weights (`79999_iter.pth`, zllrunning/face-parsing.PyTorch),
  loaded with weights_only=True into the network below (ResNet-18 context path, no backbone download);
  its output order is BISENET_LABELS.
Every parser returns label maps at the size asked, nearest-neighbour for the shipped one and from
bilinearly upsampled logits for the others.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .labels import CLASSES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CelebAMask-HQ's annotation names (and common spellings) → facemogle's class names. "l_" is the person's left.
LABEL_ALIASES = {
    "bg": "background", "background": "background", "skin": "skin", "nose": "nose", "eye_g": "eyeglasses",
    "glasses": "eyeglasses", "eyeglasses": "eyeglasses", "l_eye": "left eye", "r_eye": "right eye",
    "l_brow": "left brow", "r_brow": "right brow", "l_ear": "left ear", "r_ear": "right ear",
    "mouth": "mouth", "u_lip": "upper lip", "l_lip": "lower lip", "hair": "hair", "hat": "hat",
    "ear_r": "earring", "earring": "earring", "neck_l": "necklace", "necklace": "necklace", "neck": "neck",
    "cloth": "cloth", "clothes": "cloth",
}  # fmt: skip
# The BiSeNet face-parsing network's output channels, in its own order (face-parsing.PyTorch test.py).
BISENET_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r", "nose",
    "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
BISENET_SIZE = 512


class ParserError(ValueError):
    """A face parser that cannot be loaded; the message says what was expected."""


def class_index(name: str) -> int:
    """Our index of a parser's label name (CelebAMask-HQ short names, ours, any case, '-'/' ' for '_')."""
    key = name.strip().lower().replace("-", "_")
    ours = LABEL_ALIASES.get(key) or LABEL_ALIASES.get(key.replace(" ", "_")) or key.replace("_", " ")
    if ours not in CLASSES:
        raise ParserError(
            f"The parser's label {name!r} is not one of the 19 face classes; known names: "
            f"{', '.join(sorted(LABEL_ALIASES))}."
        )
    return CLASSES.index(ours)


class LabelledParser:
    """A network giving 19-class logits in its own label order, with its preprocessing, mapped to ours."""

    def __init__(self, network: nn.Module, names: list[str], size: int, mean, std, logits):
        self.network = network.eval()
        self.size, self.logits = size, logits
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        indices = [class_index(n) for n in names]
        if sorted(indices) != list(range(len(CLASSES))):
            raise ParserError(
                f"The parser's labels {names} do not name each of the 19 face classes once; "
                "a CelebAMask-HQ face parser is needed."
            )
        self.to_ours = torch.tensor(indices)

    @torch.no_grad()
    def parse(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → label maps [B, size, size] (long), our classes."""
        x = F.interpolate(
            (images + 1) / 2, size=self.size, mode="bilinear", antialias=True, align_corners=False
        )
        logits = self.logits(self.network((x - self.mean) / self.std))  # [B, 19, h, w]
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        return self.to_ours[logits.argmax(1)]


def load_parser(path: str | os.PathLike | None = None):
    """The shipped SynthFace parser (None), a SegFormer folder, or a BiSeNet .pth file."""
    if path is None:
        from .evaluators import load_evaluator

        return load_evaluator("parser")
    path = Path(path)
    if path.is_dir():
        if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
            from .io import read_json

            if read_json(path / "config.json").get("kind") == "parser":  # a facemogle evaluator folder
                from .evaluators import load_evaluator

                return load_evaluator("parser", path)
        return load_segformer(path)
    if path.is_file():
        return load_bisenet(path)
    raise ParserError(
        f"Face parser {path} does not exist; pass a SegFormer folder (config.json + weights) or BiSeNet's "
        "79999_iter.pth."
    )


def parse_images(parser, images: torch.Tensor, size: int) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] → label maps [B, size, size] uint8, with any parser of `load_parser`."""
    if isinstance(parser, LabelledParser):
        labels = parser.parse(images, size)
    else:  # the shipped SynthFace parser: at its own resolution, then nearest to `size`
        resolution = parser.config.resolution
        x = F.interpolate(images, size=resolution, mode="bilinear", antialias=True, align_corners=False)
        labels = parser.parse(x)
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return labels.numpy().astype(np.uint8)


# --- SegFormer (transformers) ---


def load_segformer(folder: Path) -> LabelledParser:
    try:
        from transformers import SegformerForSemanticSegmentation
    except ImportError:
        raise ImportError("A SegFormer face parser needs transformers: pip install transformers") from None
    try:
        network = SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ParserError(
            f"{folder} is not a loadable SegformerForSemanticSegmentation folder ({error})."
        ) from None
    names = [network.config.id2label[i] for i in range(network.config.num_labels)]
    size, mean, std = _segformer_preprocessing(folder)
    return LabelledParser(network, names, size, mean, std, lambda out: out.logits)


def _segformer_preprocessing(folder: Path) -> tuple[int, tuple, tuple]:
    """Input size, mean and std of the checkpoint's image processor (preprocessor_config.json); else
    SegFormer's defaults (512, ImageNet statistics)."""
    config = folder / "preprocessor_config.json"
    if not config.is_file():
        return 512, IMAGENET_MEAN, IMAGENET_STD
    from .io import read_json

    data = read_json(config)
    size = data.get("size", 512)
    side = int(size.get("height", 512)) if isinstance(size, dict) else int(size)
    return side, tuple(data.get("image_mean", IMAGENET_MEAN)), tuple(data.get("image_std", IMAGENET_STD))


# --- BiSeNet (face-parsing.PyTorch), rebuilt here with the state dict's names ---


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, its state-dict names (the detector's small ResNet uses it too)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu((x if self.downsample is None else self.downsample(x)) + residual)


class _ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (cin, cout, stride) in enumerate(widths, 1):
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))

    def forward(self, x: torch.Tensor):
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)  # [B, 128, H/8, W/8]
        feat16 = self.layer3(feat8)  # [B, 256, H/16, W/16]
        return feat8, feat16, self.layer4(feat16)  # ..., [B, 512, H/32, W/32]


class _Attention(nn.Module):
    """BiSeNet's attention refinement module."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))


class _ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = _ResNet18()
        self.arm16, self.arm32 = _Attention(256, 128), _Attention(512, 128)
        self.conv_head32, self.conv_head16 = _ConvBNReLU(128, 128), _ConvBNReLU(128, 128)
        self.conv_avg = _ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x: torch.Tensor):
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class _FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = _ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * attention + feat


class _Output(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int):
        super().__init__()
        self.conv = _ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """The face-parsing BiSeNet's main path (its two auxiliary heads are kept only to load the weights)."""

    def __init__(self, classes: int = len(BISENET_LABELS)):
        super().__init__()
        self.cp = _ContextPath()
        self.ffm = _FeatureFusion(256, 256)
        self.conv_out = _Output(256, 256, classes)
        self.conv_out16 = _Output(128, 64, classes)
        self.conv_out32 = _Output(128, 64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] (ImageNet-normalised) → logits [B, 19, H/8, W/8]."""
        feat8, context8 = self.cp(x)
        return self.conv_out(self.ffm(feat8, context8))


def load_bisenet(path: Path) -> LabelledParser:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise ParserError(
            f"{path} is not a readable PyTorch weights file ({type(error).__name__}: {error}); pass BiSeNet's "
            "79999_iter.pth (a state dict) or a SegFormer folder."
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    network = BiSeNet()
    if not isinstance(state, dict):
        raise ParserError(f"{path} holds a {type(state).__name__}, not a BiSeNet state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = network.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or wrong:
        raise ParserError(
            f"{path} is not the BiSeNet face parser's weights: {len(missing)} tensors missing {missing[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]} (19 classes are expected)."
        )
    network.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)
    return LabelledParser(
        network, list(BISENET_LABELS), BISENET_SIZE, IMAGENET_MEAN, IMAGENET_STD, lambda x: x
    )
