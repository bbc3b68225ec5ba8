"""Small networks trained on SynthFace that score generated faces offline: a face parser and an attribute classifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..labels import NUM_CLASSES

# Categorical attribute heads (class names in order) and binary ones, as SynthFace defines them.
CATEGORICAL = {
    "gender": ("female", "male"),
    "hair_length": ("bald", "short", "long"),
    "hair_color": ("none", "black", "brown", "blond", "gray", "red"),
    "hair_style": ("none", "straight", "wavy"),
    "mouth": ("closed", "smiling", "open"),
}
BINARY = (
    "bangs", "receding_hairline", "lipstick", "eyeglasses", "hat", "earrings", "necklace", "narrow_eyes",
    "arched_eyebrows", "bushy_eyebrows", "big_nose", "pale_skin", "smiling",
)  # fmt: skip


def attribute_targets(attributes: dict) -> dict[str, int]:
    """SynthFace attributes → class index per head (binary heads: 0/1)."""
    targets = {}
    for name, classes in CATEGORICAL.items():
        value = attributes.get(name)
        targets[name] = classes.index("none" if value is None else value)
    for name in BINARY:
        targets[name] = int(bool(attributes.get(name)))
    return targets


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.SiLU())


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, stride), _conv(cout, cout))


@dataclass
class EvaluatorConfig:
    kind: str  # "parser" | "classifier"
    resolution: int = 64
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])

    def to_dict(self) -> dict:
        return asdict(self)


class FaceParser(nn.Module):
    """A small U-Net: RGB [B, 3, R, R] in [-1, 1] → logits over the 19 classes [B, 19, R, R]."""

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList(
            [_stage(3, w[0], 1)] + [_stage(w[i], w[i + 1], 2) for i in range(len(w) - 1)]
        )
        self.up = nn.ModuleList([_stage(w[i + 1] + w[i], w[i], 1) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv2d(w[0], NUM_CLASSES, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        x = images
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        for stage, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return self.head(x)

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """Label maps [B, R, R] (long)."""
        return self(images).argmax(1)


class AttributeClassifier(nn.Module):
    """A small CNN with one head per SynthFace attribute; its pooled features also serve the Fréchet distance."""

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.body = nn.Sequential(_stage(3, w[0], 1), *[_stage(w[i], w[i + 1], 2) for i in range(len(w) - 1)])
        self.feature_dim = w[-1] * 2
        self.heads = nn.ModuleDict(
            {name: nn.Linear(self.feature_dim, len(c)) for name, c in CATEGORICAL.items()}
        )
        self.binary = nn.Linear(self.feature_dim, len(BINARY))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, 2·C]: mean and max over space of the last stage."""
        x = self.body(images)
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        logits = {name: head(f) for name, head in self.heads.items()}
        logits["binary"] = self.binary(f)
        return logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        """Per image, the predicted value of every attribute (categorical names, binary bools)."""
        logits = self(images)
        out = [{} for _ in range(images.shape[0])]
        for name, classes in CATEGORICAL.items():
            for row, index in zip(out, logits[name].argmax(1).tolist()):
                row[name] = None if classes[index] == "none" else classes[index]
        for row, flags in zip(out, (logits["binary"] > 0).tolist()):
            row.update(dict(zip(BINARY, flags)))
        return out


NETWORKS = {"parser": FaceParser, "classifier": AttributeClassifier}
