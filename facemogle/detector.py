"""Detectors of generated faces: the probability that an image is generated, not a real face.

Both work on neighbouring-pixel relations (NPR, Tan et al., CVPR 2024): the image minus its 2×-nearest
down- and up-sampled copy, which carries the traces of a generator's up-sampling, fed to a truncated ResNet
(a 3×3 stride-2 stem, max-pool, two residual stages, global average pool, one logit).
- the project's own (`train_detector`; shipped in assets/evaluators/detector): basic blocks [2, 2], trained
  on real SynthFace faces against the default model's; a folder with config.json, model.safetensors and
  training.json (what it was trained on, so that an evaluation on those faces is refused). It re-encodes
  every image as a JPEG of quality 95 first, as SynthFace (and CelebA-HQ) store real faces, so that the
  file format is not what tells them from generated PNGs;
- NPR's released ResNet-50 (bottleneck blocks [3, 4], their `NPR.pth`): a file the user brings, loaded
  with weights_only=True; ImageNet normalisation as in their evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data.folders import stem_order
from .data.synthface import read_settings
from .errors import FaceMoGLEError
from .parsing import BasicBlock

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DetectorError(FaceMoGLEError, ValueError):
    """A detector file or folder that cannot be used; the message says what was expected."""


@dataclass
class DetectorConfig:
    block: str = "basic"  # basic (the project's) | bottleneck (NPR's ResNet-50)
    layers: tuple[int, int] = (2, 2)
    resolution: int = 128  # images are resized to this before the residual
    threshold: float = 0.5  # the default decision: generated when the probability is at least this
    jpeg_quality: int | None = 95  # every image re-encoded so first (None: as it is)

    def check(self) -> None:
        """A config that builds a network, or a DetectorError naming the field."""
        if self.block not in BLOCKS:
            raise DetectorError(f"block {self.block!r} is not one of {', '.join(BLOCKS)}.")
        if len(self.layers) != 2 or not all(isinstance(n, int) and n >= 1 for n in self.layers):
            raise DetectorError(f"layers {list(self.layers)} must be two block counts ≥ 1.")
        if not isinstance(self.resolution, int) or self.resolution < 16 or self.resolution % 2:
            raise DetectorError(f"resolution {self.resolution} must be an even number of pixels ≥ 16.")
        if not 0 <= self.threshold <= 1:
            raise DetectorError(f"threshold {self.threshold} must be a probability in [0, 1].")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise DetectorError(f"jpeg_quality {self.jpeg_quality} must be in 1–100 or null.")


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x [B, 3, H, W] minus its nearest 2× down- then up-sampled copy (H, W even)."""
    coarse = F.interpolate(
        F.interpolate(x, scale_factor=0.5, mode="nearest"), scale_factor=2.0, mode="nearest"
    )
    return x - coarse


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class NPRNet(nn.Module):
    """The NPR residual → stem → two residual stages → pooled → one logit (state-dict names as NPR's)."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        block = BLOCKS[config.block]
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.inplanes = 64
        self.layer1 = self._stage(block, 64, config.layers[0], 1)
        self.layer2 = self._stage(block, 128, config.layers[1], 2)
        self.fc1 = nn.Linear(128 * block.expansion, 1)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] → logits [B] (positive: generated)."""
        x = F.relu(self.bn1(self.conv1(npr_residual(x) * 2.0 / 3.0)))  # NPR's input scale
        x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer2(self.layer1(x))
        return self.fc1(x.mean(dim=(2, 3)))[:, 0]


BLOCKS = {"basic": BasicBlock, "bottleneck": _Bottleneck}
NPR_RESNET50 = DetectorConfig(block="bottleneck", layers=(3, 4), resolution=256, jpeg_quality=None)


class Detector:
    """A loaded detector: `probabilities(images)` → P(generated) per image. training: what it was trained on
    (the project's detectors; None for weights brought from elsewhere)."""

    def __init__(self, network: NPRNet, normalise: bool, training: dict | None = None):
        self.network = network.eval()
        self.config = network.config
        self.normalise = normalise
        self.training = training

    def check_size(self, image: Image.Image, name: str = "An image") -> None:
        """Images under half the detector's resolution carry too little of a generator's traces to judge."""
        smallest = self.config.resolution // 2
        if min(image.size) < smallest:
            raise DetectorError(
                f"{name} is {image.width}×{image.height}: the detector judges faces of {smallest}² and up (it "
                f"reads them at {self.config.resolution}²); pass the image as it was made, not a thumbnail."
            )

    def tensors(self, images: list[Image.Image]) -> torch.Tensor:
        size, quality = self.config.resolution, self.config.jpeg_quality
        images = [_jpeg(im, quality) if quality else im.convert("RGB") for im in images]
        arrays = [np.asarray(im.resize((size, size), Image.BICUBIC)) for im in images]
        x = torch.as_tensor(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255  # [B, 3, R, R] in [0, 1]
        if self.normalise:
            mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
            x = (x - mean) / std
        return x

    @torch.no_grad()
    def probabilities(self, images: list[Image.Image], batch: int = 64) -> np.ndarray:
        out = [
            torch.sigmoid(self.network(self.tensors(images[i : i + batch])))
            for i in range(0, len(images), batch)
        ]
        return torch.cat(out).numpy()


def load_detector(path: str | os.PathLike | None = None) -> Detector:
    """The shipped detector (None), a folder saved by `save_detector`, or NPR's ResNet-50 weights file."""
    if path is None:
        from importlib import resources

        shipped = Path(str(resources.files("facemogle") / "assets" / "evaluators" / "detector"))
        if not (shipped / "model.safetensors").is_file():
            raise DetectorError(
                f"The shipped detector is missing from this installation ({shipped}); reinstall facemogle "
                "(`pip install -e .` in a clone keeps assets/) or pass --detector FOLDER_OR_FILE."
            )
        return _load_folder(shipped)
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise DetectorError(
            f"{path} does not exist; give a detector folder or NPR's ResNet-50 weights (.pth)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for files that are not its checkpoints
        raise DetectorError(
            f"{path} is not a PyTorch weights file that loads with weights_only=True ({error})."
        ) from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise DetectorError(f"{path} holds no state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    network = NPRNet(NPR_RESNET50)
    _load_state(network, state, path, "NPR's ResNet-50 layout (bottleneck blocks [3, 4], fc1 of 512)")
    return Detector(network, normalise=True)


def save_detector(network: NPRNet, folder: str | os.PathLike, training: dict | None = None) -> None:
    """config.json, model.safetensors and training.json (see `training_record`), each written atomically."""
    from safetensors.torch import save_file

    from .io import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda temporary: save_file(state, str(temporary)))
    atomic_write(
        folder / "training.json",
        lambda temporary: Path(temporary).write_text(json.dumps(training or {}) + "\n"),
    )
    config = json.dumps(asdict(network.config), indent=2) + "\n"
    atomic_write(folder / "config.json", lambda temporary: Path(temporary).write_text(config))


def stored_like(images: list[Image.Image], data: str | os.PathLike, split: str) -> list[Image.Image]:
    """Generated faces stored as the real faces of a dataset's split are: re-encoded as JPEGs of quality 95
    when those are JPEGs (SynthFace's and CelebA-HQ's), else as they are — so that no detector is scored
    on telling PNG from JPEG."""
    from .data.folders import FaceMaskTextDataset

    dataset = FaceMaskTextDataset(data, split=split)
    suffixes = {dataset.faces[stem].suffix.lower() for stem in dataset.stems}
    return [_jpeg(im, 95) for im in images] if suffixes <= {".jpg", ".jpeg"} else images


def image_hash(image: Image.Image) -> str:
    """A hash of an image's RGB pixels and size (the same face in PNG or lossless WEBP hashes alike)."""
    import hashlib

    rgb = image.convert("RGB")
    return hashlib.sha1(f"{rgb.width}x{rgb.height}".encode() + rgb.tobytes()).hexdigest()


def dataset_identity(data: str | os.PathLike) -> str:
    """Which faces a dataset folder holds: SynthFace's seed (face i of a seed is the same person wherever and
    at whatever size it is drawn, so a shipped detector knows its training faces on a user's machine), else
    the folder's path."""
    settings = read_settings(Path(data))
    return f"SynthFace seed {settings['seed']}" if settings else str(Path(data).resolve())


def training_record(data: str | os.PathLike, real: list[str], generated: list[Image.Image]) -> dict:
    """What a detector was trained on: the real faces' dataset and stems, and a hash of each generated face."""
    return {
        "data": dataset_identity(data),
        "real": sorted(real, key=stem_order),
        "generated": sorted(image_hash(g) for g in generated),
    }


def check_held_out(
    detector: Detector, name: str, data, real: list[str], generated: dict[str, list[Image.Image]]
) -> None:
    """A DetectorError when an evaluation would score a detector on faces it was trained on: real faces
    (stems of the same dataset, whatever its split says) or generated ones (by their pixels)."""
    record = detector.training or {}
    if "data" in record and "real" not in record:
        raise DetectorError(
            f"{name}'s training.json predates the record of its real training faces, so a held-out "
            "evaluation cannot be checked; retrain it with `facemogle train-detector`."
        )
    if record.get("data") == dataset_identity(data):
        overlap = sorted(set(record["real"]) & set(real), key=stem_order)
        if overlap:
            raise DetectorError(
                f"{len(overlap)} of the {len(real)} real faces of {data} ({_stems(overlap)}) are among those "
                f"{name} was trained on ({record['data']}, items {_stems(record['real'])}, at any size or "
                "split); evaluate it on other faces: other items, another seed or another dataset."
            )
    seen = set(record.get("generated", ()))
    for generator, faces in generated.items():
        overlap = sum(image_hash(f) in seen for f in faces)
        if overlap:
            raise DetectorError(
                f"{overlap} of the {len(faces)} {generator} faces are among those {name} was trained on; evaluate "
                "it on held-out faces (e.g. `facemogle eval --split test`'s images when it trained on --split train's)."
            )


def _stems(stems: list[str]) -> str:
    return stems[0] if len(stems) == 1 else f"{stems[0]}…{stems[-1]}, {len(stems)}"


def _load_folder(folder: Path) -> Detector:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = json.loads((folder / "config.json").read_text())
        saved.setdefault("jpeg_quality", None)  # saved before the JPEG re-encoding: trained without it
        config = DetectorConfig(**saved)
        config.layers = tuple(config.layers)
        config.check()
        state = load_file(str(folder / "model.safetensors"))
        training = (
            json.loads((folder / "training.json").read_text())
            if (folder / "training.json").exists()
            else None
        )
    except (OSError, ValueError, TypeError, SafetensorError) as error:
        raise DetectorError(
            f"{folder} is not a detector folder (config.json + model.safetensors): {error}"
        ) from None
    network = NPRNet(config)
    _load_state(network, state, folder, f"a {config.block} detector with layers {list(config.layers)}")
    return Detector(network, normalise=False, training=training)


def _load_state(network: NPRNet, state: dict, path: Path, expected: str) -> None:
    mine = network.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    wrong = [k for k in mine if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or unexpected or wrong:
        raise DetectorError(
            f"{path} is not {expected}: missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}."
        )
    network.load_state_dict(state)


def degrade(image: Image.Image, kind: str) -> Image.Image:
    """The image after a common change on its way to a viewer: "jpeg75" re-compression, "resize2x" (down to
    half, back up, bicubic), or "none"."""
    if kind == "none":
        return image
    if kind == "jpeg75":
        return _jpeg(image, 75)
    if kind == "resize2x":
        w, h = image.size
        return image.resize((w // 2, h // 2), Image.BICUBIC).resize((w, h), Image.BICUBIC)
    raise ValueError(f"Unknown degradation {kind!r}; use none, jpeg75 or resize2x.")


DEGRADATIONS = ("none", "jpeg75", "resize2x")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Training-time robustness: a random flip, and half the time JPEG (quality 60–95) or 2× down-up-scaling."""
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    u = rng.random()
    if u < 0.25:
        image = _jpeg(image, int(rng.integers(60, 96)))
    elif u < 0.5:
        image = degrade(image, "resize2x")
    return image


def train_detector(
    real: list[Image.Image],
    generated: list[Image.Image],
    config: DetectorConfig | None = None,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> NPRNet:
    """Train the project's detector on real (label 0) against generated (label 1) faces, balanced batches
    with flips, JPEG and resizing (AdamW, cosine decay)."""
    from tqdm.auto import tqdm

    if not real or not generated:
        raise DetectorError("Training a detector needs real and generated faces, some of each.")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = NPRNet(config or DetectorConfig())
    detector = Detector(network, normalise=False)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    network.train()
    for _ in tqdm(range(steps), desc="training the detector", unit="step", disable=not progress):
        half = batch_size // 2
        picks = [real[i] for i in rng.integers(0, len(real), half)] + [
            generated[i] for i in rng.integers(0, len(generated), batch_size - half)
        ]
        x = detector.tensors([_augment(im, rng) for im in picks])
        y = torch.cat([torch.zeros(half), torch.ones(batch_size - half)])
        loss = F.binary_cross_entropy_with_logits(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return network.eval()
